// The draft model, checked before the coordinator serves: a draft whose vocabulary differs from the
// model's can never draft a token the model would accept, so it is refused at start with both
// vocabularies named; a draft that cannot be read leaves the coordinator serving without it.
import { ErrorCode, HearthError, messageOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { LlamaModel } from '../native/llama.js';
import type { CoordinatorConfig } from './config.js';

export async function checkDraftModel(config: CoordinatorConfig, log: Logger): Promise<CoordinatorConfig> {
  const spec = config.speculation;
  if (!spec?.draftModel || !config.model) return config;
  let target: LlamaModel;
  try {
    target = await LlamaModel.load(config.model, { devices: [], nGpuLayers: 0, vocabOnly: true });
  } catch {
    return config; // the model's own load reports what is wrong with it
  }
  try {
    let draft: LlamaModel;
    try {
      draft = await LlamaModel.load(spec.draftModel, { devices: [], nGpuLayers: 0, vocabOnly: true });
    } catch (e) {
      const note = `the draft model ${spec.draftModel} cannot be loaded: ${messageOf(e)}`;
      log.warn({ draftModel: spec.draftModel }, `${note}; serving without it${spec.ngram > 0 ? ', with n-gram lookup only' : ', without speculative decoding'}`);
      return Object.freeze({ ...config, speculation: spec.ngram > 0 ? { ...spec, draftModel: null } : null, speculationNote: note });
    }
    const difference = target.vocabularyDifference(draft);
    draft.dispose();
    if (difference) {
      throw new HearthError(ErrorCode.InvalidArgument, `--draft-model: ${spec.draftModel} cannot draft for ${config.model}: ${difference}. A draft model must share the model's vocabulary (a smaller model of the same family)`);
    }
    return config;
  } finally {
    target.dispose();
  }
}
