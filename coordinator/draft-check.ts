// The draft model, checked before the coordinator serves: a draft whose vocabulary differs from the
// model's can never draft a token the model would accept, so it is refused at start with both
// vocabularies named; a draft that cannot be read leaves the coordinator serving without it.
import { ErrorCode, HearthError, messageOf } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { LlamaModel } from '../native/llama.js';
import type { CoordinatorConfig, ServedModelConfig } from './config.js';

/** Every served model's draft model checked; the top-level settings follow the first model's. */
export async function checkDraftModel(config: CoordinatorConfig, log: Logger): Promise<CoordinatorConfig> {
  if (config.models.length === 0) return config;
  const models: ServedModelConfig[] = [];
  for (const m of config.models) models.push(await checkDraftOf(m, log));
  const first = models[0]!;
  return Object.freeze({ ...config, speculation: first.speculation, speculationNote: first.speculationNote ?? null, models: Object.freeze(models) });
}

async function checkDraftOf(config: ServedModelConfig, log: Logger): Promise<ServedModelConfig> {
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

/** Every chat template given in place of a model's own, parsed against its model before serving: a bad one is refused at start, naming the model. */
export async function checkChatTemplates(config: CoordinatorConfig): Promise<void> {
  for (const m of config.models) {
    if (m.chatTemplate === null || !m.model) continue;
    let model: LlamaModel;
    try {
      model = await LlamaModel.load(m.model, { devices: [], nGpuLayers: 0, vocabOnly: true });
    } catch {
      continue; // the model's own load reports what is wrong with it
    }
    try {
      model.chatTemplates(m.chatTemplate);
    } catch (e) {
      throw new HearthError(ErrorCode.InvalidArgument, `chatTemplate of model ${m.id}: ${messageOf(e).replace(/^chatTemplate: /, '')}`);
    } finally {
      model.dispose();
    }
  }
}
