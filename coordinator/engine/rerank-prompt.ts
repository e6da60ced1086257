// A reranker's input for one (query, document) pair, exactly as llama-server v0.5.0 builds it
// (format_prompt_rerank in tools/server/server-common.cpp). Pure: the tokenizer is passed in.

/** What of a model's vocabulary the rerank input uses. */
export interface RerankVocabulary {
  /** tokenizer.chat_template.rerank, with {query} and {document}; null: none. */
  rerankTemplate: string | null;
  bos: number;
  eos: number;
  sep: number;
  addBos: boolean;
  addEos: boolean;
  addSep: boolean;
}

export type Tokenize = (text: string, addSpecial: boolean, parseSpecial: boolean) => ArrayLike<number>;

/** llama.cpp's LLAMA_TOKEN_NULL. */
const NO_TOKEN = -1;

/**
 * With a rerank template: the template with {query}, then {document}, replaced (every occurrence, as
 * string_replace_all does), tokenized with special tokens parsed but none added. Without one: BOS (when
 * the tokenizer adds it), the query, EOS (or SEP when there is no EOS) and SEP when the tokenizer adds
 * them, the document, EOS.
 */
export function rerankTokens(v: RerankVocabulary, tokenize: Tokenize, query: string, document: string): number[] {
  if (v.rerankTemplate !== null) {
    const prompt = v.rerankTemplate.split('{query}').join(query).split('{document}').join(document);
    return Array.from(tokenize(prompt, false, true));
  }
  const eos = v.eos === NO_TOKEN ? v.sep : v.eos;
  const out: number[] = [];
  if (v.addBos) out.push(v.bos);
  out.push(...Array.from(tokenize(query, false, false)));
  if (v.addEos) out.push(eos);
  if (v.addSep) out.push(v.sep);
  out.push(...Array.from(tokenize(document, false, false)));
  if (v.addEos) out.push(eos);
  return out;
}
