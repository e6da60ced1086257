// The `hearth` command line without `hearth bench`: what the demo's and the benchmark's child
// processes and the tests run (through tsx or compiled). The installed command is bin/hearth.js.
import { hearthProgram, runHearth } from './program.js';

await runHearth(hearthProgram());
