// Two rules of OpenAI's tool calling that llama.cpp's generated grammars (this release) leave open, for
// templates whose calls are each wrapped in markers (Hermes' <tool_call>...</tool_call>, Qwen's):
// `tool_choice: "required"` lets free text come first, and `parallel_tool_calls: false` still allows
// several calls. A model can ramble, or call again and again, until max_tokens; these close the rules.
// A grammar of another shape is returned unchanged.

/** Tool calls only, no text before them: drops the optional free text (`until-N?`) before `tool-calls` in the root rule. */
export function toolCallsOnly(grammar: string): string {
  return grammar.replace(/^(root ::= .*?)\s+until-\d+\?\s+(tool-calls)\s*$/m, '$1 $2');
}

/** At most one call: `tool-calls ::= (tool-call space)+` becomes a single call. */
export function singleToolCall(grammar: string): string {
  return grammar.replace(/^tool-calls ::= \(tool-call space\)\+\s*$/m, 'tool-calls ::= tool-call space');
}
