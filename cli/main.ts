// The `hearth` command line.
import { Command, CommanderError } from 'commander';

import { isHearthError, messageOf } from '../common/errors.js';
import { newToken } from '../link/token.js';
import { loadBinding, readBuildInfo } from '../native/binding.js';
import { localDevices } from '../native/llama.js';
import { registerBenchCommand } from './commands/bench.js';
import { registerCoordinatorCommands } from './commands/coordinator.js';
import { registerDemoCommand } from './commands/demo.js';
import { registerModelCommands } from './commands/model.js';
import { registerWorkerCommand } from './commands/worker.js';
import { formatBytes, table } from './format.js';
import { withoutToken } from './options.js';

// A token given with --token would show in `ps` and /proc/PID/cmdline: replace the process title
// (on Linux this overwrites the argument memory the kernel shows) before anything else runs.
if (process.argv.some((a) => a === '--token' || a.startsWith('--token='))) {
  process.title = ['hearth', ...withoutToken(process.argv.slice(2))].join(' ');
}

const program = new Command()
  .name('hearth')
  .description('pool ordinary machines into one llama.cpp inference service')
  .showHelpAfterError()
  .exitOverride();

program
  .command('info')
  .description('show the native build (llama.cpp, ggml, RPC protocol) and the local devices')
  .action(() => {
    const sys = loadBinding().systemInfo();
    const build = readBuildInfo();
    process.stdout.write(
      `llama.cpp ${sys.llamaCppRelease} (${build.llamaCppCommit ?? 'unknown commit'}), ggml ${sys.ggmlVersion}, RPC protocol ${sys.rpcProtocol}\n` +
        `backends: ${sys.backends.join(', ')}\n\n`,
    );
    const rows = [['device', 'backend', 'type', 'free', 'total', 'description']];
    for (const d of localDevices()) rows.push([d.name, d.backend, d.type, formatBytes(d.freeBytes), formatBytes(d.totalBytes), d.description]);
    process.stdout.write(table(rows) + '\n');
  });

program
  .command('token')
  .description('print a new cluster token (256 random bits): give it to every machine of the cluster')
  .action(() => {
    process.stdout.write(`${newToken()}\n`);
  });

registerModelCommands(program);
registerDemoCommand(program);
registerWorkerCommand(program);
registerCoordinatorCommands(program);
registerBenchCommand(program);

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) {
    process.exitCode = e.exitCode;
  } else {
    process.stderr.write(`hearth: error: ${messageOf(e)}\n`);
    process.exitCode = isHearthError(e) && e.code === 'INVALID_ARGUMENT' ? 2 : 1;
  }
}
