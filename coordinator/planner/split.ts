// How the model is split over the devices. 'layer': each device holds whole layers and a token passes
// through them one after another (llama.cpp's LLAMA_SPLIT_MODE_LAYER). 'tensor': every device holds a
// share of every layer and they compute each layer together, summing their partial results after the
// attention and the feed-forward block of each layer (LLAMA_SPLIT_MODE_TENSOR: llama.cpp's "meta"
// device over the RPC devices, ggml/src/ggml-backend-meta.cpp). 'auto' plans both and takes the one
// the time model predicts faster. Which devices and models can take part in tensor mode is decided here.
import { ErrorCode, HearthError } from '../../common/errors.js';
import { formatVersion, parseVersion, type RpcVersion } from '../../native/rpc-protocol.js';
import { SPLIT_SETTINGS, type CandidateDevice, type ModelFacts, type SplitSetting } from './types.js';

export const SPLIT_HELP = 'layer (whole layers per device, one device after another), tensor (a share of every layer on every worker, computed together) or auto (the one the time model predicts faster)';

export function parseSplitSetting(value: string, field: string): SplitSetting {
  if ((SPLIT_SETTINGS as readonly string[]).includes(value)) return value as SplitSetting;
  throw new HearthError(ErrorCode.InvalidArgument, `${field}: '${value}' must be ${SPLIT_HELP}`);
}

/**
 * The RPC protocol in which rpc servers reduce partial sums among themselves (the peer commands of
 * native/patches): older servers would send every partial sum through the coordinator.
 */
export const TENSOR_RPC_PROTOCOL: RpcVersion = { major: 7, minor: 1, patch: 0 };

/**
 * Architectures llama.cpp refuses to split by tensor (llm_arch_supports_sm_tensor in src/llama-arch.cpp,
 * by their GGUF names): llama_model_create throws "LLAMA_SPLIT_MODE_TENSOR not implemented".
 */
const NO_TENSOR_SPLIT: ReadonlySet<string> = new Set([
  'grok', 'mpt', 'plamo2', 'minicpm3', 'gemma3n', 'mamba', 'mamba2', 'jamba', 'falcon-h1', 'olmo2', 'olmoe', 'deepseek2', 'deepseek32',
  'hy_v4', 'dots3note', 'glm-dsa', 'bitnet', 't5', 'nemotron_h', 'nemotron_h_moe', 'granitehybrid', 'minimax-01', 'minimax-m2',
  'minimax-m3', 'mistral4', 'kimi-linear', 'bailingmoe3', 'kimi-k3', 'qwen3tts', 'qwen4exp',
]);

/** Why llama.cpp cannot split this model by tensor, or null when it can. */
export function architectureRefusal(model: Pick<ModelFacts, 'architecture'>): string | null {
  if (!NO_TENSOR_SPLIT.has(model.architecture)) return null;
  return `llama.cpp cannot split the ${model.architecture} architecture by tensor (LLAMA_SPLIT_MODE_TENSOR is not implemented for it)`;
}

function atLeast(v: RpcVersion, min: RpcVersion): boolean {
  return v.major !== min.major ? v.major > min.major : v.minor !== min.minor ? v.minor > min.minor : v.patch >= min.patch;
}

/**
 * Why this device cannot take part in tensor mode, or null when it can. `client`: the coordinator's own
 * RPC protocol (absent: taken to be recent enough). A device that does not say its worker's protocol is
 * taken to run the coordinator's build (a cluster on paper).
 */
export function tensorDeviceRefusal(device: CandidateDevice, client: RpcVersion | null): string | null {
  if (device.kind === 'local') {
    return "the coordinator's own CPU does not take part in tensor mode: llama.cpp's meta device takes no CPU buffer type, so the workers share every layer";
  }
  const needed = formatVersion(TENSOR_RPC_PROTOCOL);
  const mine = client ? ` (this coordinator speaks ${formatVersion(client)})` : '';
  if (client && !atLeast(client, TENSOR_RPC_PROTOCOL)) {
    return `this coordinator speaks RPC ${formatVersion(client)}; tensor mode needs ${needed}, whose workers sum their partial results among themselves: update hearth here`;
  }
  if (device.rpcProtocol === undefined || device.rpcProtocol === null) return null;
  const worker = parseVersion(device.rpcProtocol);
  if (!worker) return `worker ${device.owner} reports an unreadable RPC protocol '${device.rpcProtocol}'; tensor mode needs ${needed}${mine}`;
  if (!atLeast(worker, TENSOR_RPC_PROTOCOL)) {
    return `worker ${device.owner} speaks RPC ${formatVersion(worker)}; tensor mode needs ${needed}${mine}: it takes part in layer mode only until hearth is updated on it`;
  }
  return null;
}
