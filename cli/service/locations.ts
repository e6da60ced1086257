// Where each platform keeps a service's definition and logs, and what it calls the service. Pure.
import { join } from 'node:path';

import { ErrorCode, HearthError } from '../../common/errors.js';
import type { ServiceRole, ServiceScope } from './definition.js';

export type ServicePlatform = 'systemd' | 'launchd';

export interface ServicePlace {
  readonly platform: ServicePlatform;
  readonly scope: ServiceScope;
  readonly role: ServiceRole;
  /** systemd's unit name (hearth-worker.service) or launchd's label (hearth.worker). */
  readonly name: string;
  /** Where the definition is written: under `root` when one is given. */
  readonly file: string;
  /** launchd: the log file the plist names (the real path, not under `root`); systemd: null (the journal). */
  readonly logFile: string | null;
}

export function servicePlatform(platform: NodeJS.Platform): ServicePlatform {
  if (platform === 'linux') return 'systemd';
  if (platform === 'darwin') return 'launchd';
  throw new HearthError(ErrorCode.Unsupported, `hearth service knows systemd (Linux) and launchd (macOS), not ${platform}: run \`hearth worker\` or \`hearth coordinator\` from your own service manager`);
}

export interface PlaceInputs {
  readonly platform: ServicePlatform;
  readonly scope: ServiceScope;
  readonly role: ServiceRole;
  /** The home of the user whose user service this is (user scope only). */
  readonly home: string;
  /** XDG_CONFIG_HOME of that user, when set (systemd's user units live under it). */
  readonly configHome?: string | undefined;
  /** HEARTH_SERVICE_ROOT: files go below this folder instead of /, and no service manager is asked. */
  readonly root: string | null;
}

export function servicePlace(i: PlaceInputs): ServicePlace {
  const under = (path: string) => (i.root === null ? path : join(i.root, path));
  if (i.platform === 'systemd') {
    const name = `hearth-${i.role}.service`;
    const dir = i.scope === 'system' ? '/etc/systemd/system' : join(i.configHome || join(i.home, '.config'), 'systemd', 'user');
    return { platform: i.platform, scope: i.scope, role: i.role, name, file: under(join(dir, name)), logFile: null };
  }
  const name = `hearth.${i.role}`;
  const library = i.scope === 'system' ? '/Library' : join(i.home, 'Library');
  const dir = join(library, i.scope === 'system' ? 'LaunchDaemons' : 'LaunchAgents');
  return { platform: i.platform, scope: i.scope, role: i.role, name, file: under(join(dir, `${name}.plist`)), logFile: join(library, 'Logs', 'hearth', `${i.role}.log`) };
}
