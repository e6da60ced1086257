// The `hearth` command line: its commands, and running one from argv. cli/main.ts runs it as it is;
// bin/hearth.js, the installed command, adds `hearth bench` (bench/command.ts) first.
import { Command, CommanderError } from 'commander';

import { isHearthError, messageOf } from '../common/errors.js';
import { newToken } from '../link/token.js';
import { loadBinding, nativeArtifacts, readBuildInfo } from '../native/binding.js';
import { localDevices } from '../native/llama.js';
import { registerCoordinatorCommands } from './commands/coordinator.js';
import { registerDemoCommand } from './commands/demo.js';
import { registerModelCommands } from './commands/model.js';
import { registerServiceCommands } from './commands/service.js';
import { registerWorkerCommand } from './commands/worker.js';
import { formatBytes, table } from './format.js';
import { describeInstallation, installation } from './installation.js';
import { llamaServerFlags, withoutToken } from './options.js';

export function hearthProgram(): Command {
  const program = new Command()
    .name('hearth')
    .description('pool ordinary machines into one llama.cpp inference service')
    .showHelpAfterError()
    // A command's options stop at its subcommand: `hearth worker drain --token-file F` gives the file to
    // drain, not to the worker daemon's own --token-file.
    .enablePositionalOptions()
    .exitOverride();

  program
    .command('info')
    .description('show which hearth this is (version, commit, where it is installed), its native build (llama.cpp, ggml, RPC protocol, backends) and the local devices')
    .option('--json', 'print it as JSON')
    .action((opts: { json?: boolean }) => {
      const inst = installation();
      // Which hearth and where come first: they are what to report when the native build is the trouble.
      if (!opts.json) process.stdout.write(`hearth ${describeInstallation(inst)}\n${inst.kind === 'checkout' ? 'checkout at' : 'installed at'} ${inst.root}\n`);
      const sys = loadBinding().systemInfo();
      const build = readBuildInfo();
      const { dir } = nativeArtifacts();
      const devices = localDevices();
      if (opts.json) {
        const native = { dir, buildType: build.buildType, llamaCppRelease: sys.llamaCppRelease, llamaCppCommit: build.llamaCppCommit, llamaCppDir: build.llamaCppDir, ggmlVersion: sys.ggmlVersion, rpcProtocol: sys.rpcProtocol, backends: sys.backends, gpu: build.gpu, nativeCpu: build.nativeCpu, cpuFeatures: sys.cpuFeatures };
        process.stdout.write(JSON.stringify({ hearth: inst, native, devices }, null, 2) + '\n');
        return;
      }
      process.stdout.write(
        `llama.cpp ${sys.llamaCppRelease} (${build.llamaCppCommit ?? 'unknown commit'}), ggml ${sys.ggmlVersion}, RPC protocol ${sys.rpcProtocol}\n` +
          `native build: ${build.buildType ?? 'build type not recorded'}, ${build.nativeCpu ? "this machine's CPU flags (GGML_NATIVE)" : 'portable CPU flags'}, in ${dir}\n` +
          `backends: ${sys.backends.join(', ')}\n\n`,
      );
      const rows = [['device', 'backend', 'type', 'free', 'total', 'description']];
      for (const d of devices) rows.push([d.name, d.backend, d.type, formatBytes(d.freeBytes), formatBytes(d.totalBytes), d.description]);
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
  registerServiceCommands(program);
  return program;
}

/** Runs the command `argv` names; errors become a message on stderr and the exit code. */
export async function runHearth(program: Command, argv: string[] = process.argv): Promise<void> {
  // A token given with --token would show in `ps` and /proc/PID/cmdline: replace the process title
  // (on Linux this overwrites the argument memory the kernel shows) before anything else runs.
  if (argv.some((a) => a === '--token' || a.startsWith('--token='))) {
    process.title = ['hearth', ...withoutToken(argv.slice(2))].join(' ');
  }
  try {
    await program.parseAsync(llamaServerFlags(argv));
  } catch (e) {
    if (e instanceof CommanderError) {
      process.exitCode = e.exitCode;
    } else {
      process.stderr.write(`hearth: error: ${messageOf(e)}\n`);
      process.exitCode = isHearthError(e) && e.code === 'INVALID_ARGUMENT' ? 2 : 1;
    }
  }
}
