// Control groups for tests: the same helper the benchmarks use.
export { cgroupsAvailable, makeCgroup, type TestCgroup } from '../../bench/cgroup.js';
