// hearth's architecture as rules that `npm test` checks (test/unit/architecture.test.ts), and that
// `npx depcruise common native link models host worker coordinator cli bench bin scripts test` reports.
//
// The folders are layers, each importing only the layers below it:
//
//   bin (the `hearth` command), scripts (what npm pack and npm publish run)
//   bench
//   cli
//   coordinator
//   worker
//   host (facts about this machine: memory, calibration, TCP byte counters)
//   link, models
//   native
//   common
//
// so that each part can be read, tested and changed knowing only what is beneath it. test/ may
// import anything; nothing imports test/.

/** Lowest first; folders on one line are one layer and do not import each other. */
const LAYERS = [['common'], ['native'], ['link', 'models'], ['host'], ['worker'], ['coordinator'], ['cli'], ['bench'], ['bin', 'scripts']];

const layerRules = LAYERS.flatMap((layer, i) => {
  const below = LAYERS.slice(0, i).flat();
  return layer.map((folder) => ({
    name: `layers/${folder}`,
    comment: `${folder}/ imports only the layers below it (${below.join(', ') || 'none'}): ${folder}/ must not depend on what is built on top of it.`,
    severity: 'error',
    from: { path: `^${folder}/` },
    to: { dependencyTypesNot: ['core'], pathNot: `^(node_modules|${[folder, ...below].join('|')})/` },
  }));
});

/** @type {import('dependency-cruiser').IConfiguration} */
export default {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'A circle of imports has no bottom to read or test it from; type-only imports count.',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    ...layerRules,
    {
      name: 'no-coordinator-to-worker',
      comment:
        'The coordinator reaches workers only over the wire (link/), never through the worker process\'s code: what both need lives in host/, link/ or common/.',
      severity: 'error',
      from: { path: '^coordinator/' },
      to: { path: '^worker/' },
    },
    {
      name: 'no-unresolvable',
      comment: 'An import the checker cannot resolve is one no rule above can check.',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: '^node_modules/' },
    exclude: { path: '^(dist|native/build)/' },
    // `import type` is a dependency on the other layer's design too.
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.test.json' },
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
      mainFields: ['module', 'main', 'types', 'typings'],
    },
  },
};
