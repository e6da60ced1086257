// The `hearth` command line: its commands, and running one from argv. cli/main.ts runs it as it is;
// bin/hearth.js, the installed command, adds `hearth bench` (bench/command.ts) first.
import { Command, CommanderError } from 'commander';

import { isHearthError, messageOf } from '../common/errors.js';
import { newToken } from '../link/token.js';
import { loadBinding, readBuildInfo } from '../native/binding.js';
import { localDevices } from '../native/llama.js';
import { registerCoordinatorCommands } from './commands/coordinator.js';
import { registerDemoCommand } from './commands/demo.js';
import { registerModelCommands } from './commands/model.js';
import { registerServiceCommands } from './commands/service.js';
import { registerWorkerCommand } from './commands/worker.js';
import { formatBytes, table } from './format.js';
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
