// llama.cpp's chat machinery through the addon: templates with tools and reasoning, the parser, JSON
// schemas as grammars, grammar-constrained sampling and logprobs, on the real tiny test model.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { HearthError } from '../../common/errors.js';
import { Batch, jsonSchemaToGrammar, LlamaModel, type ChatTemplates, type LlamaContext, type Sampler } from '../../native/llama.js';
import { testModel } from '../helpers/models.js';

const TOOLS = [
  {
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'The weather in a city',
      parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
    },
  },
  { type: 'function', function: { name: 'get_time', description: 'The time', parameters: { type: 'object', properties: {} } } },
];
const ASK = [{ role: 'user', content: 'Weather in Paris?' }];
const N_SCHEMA = { type: 'object', properties: { n: { type: 'integer' } }, required: ['n'] };

function invalid(field: string): (e: unknown) => boolean {
  return (e) => {
    assert.ok(e instanceof HearthError, `a HearthError, got ${String(e)}`);
    assert.equal(e.code, 'INVALID_ARGUMENT');
    assert.ok(e.message.startsWith(field + ':'), `'${e.message}' should name ${field}`);
    return true;
  };
}

/** Greedy generation of up to n tokens after `prompt`, sampled by `sampler`; stops at end of generation. */
async function generate(model: LlamaModel, ctx: LlamaContext, prompt: string, sampler: Sampler, n: number): Promise<{ text: string; tokens: number[] }> {
  const promptTokens = model.tokenize(prompt, { addSpecial: true, parseSpecial: true });
  const tokens: number[] = [];
  let batch = new Batch();
  batch.sample(batch.addSequence(promptTokens, 0, 0, true), sampler);
  for (let i = 0; i < n; i++) {
    const tok = (await ctx.decode(batch))[0]!;
    if (model.isEndOfGeneration(tok)) break;
    tokens.push(tok);
    batch = new Batch();
    batch.sample(batch.add(tok, promptTokens.length + i, 0, true), sampler);
  }
  ctx.removeSequence(0);
  return { text: Buffer.concat(tokens.map((t) => model.tokenToPiece(t))).toString('utf8'), tokens };
}

describe('native chat templates, grammars and logprobs', () => {
  let model: LlamaModel;
  let templates: ChatTemplates;
  let ctx: LlamaContext;

  before(async () => {
    model = await LlamaModel.load(await testModel('tiny'));
    templates = model.chatTemplates();
    ctx = await model.createContext({ nCtx: 1024, nThreads: 1 });
  });

  after(() => {
    ctx?.dispose();
    model?.dispose();
  });

  test("the test model's own template has tools and thinking", () => {
    const info = templates.info();
    assert.match(info.source, /<tool_call>/);
    assert.equal(info.supportsThinking, true);
    assert.equal(info.caps.supports_tool_calls, true);
    // The legacy path (llama_chat_apply_template) still serves plain chats: it reads the template as ChatML.
    assert.match(model.applyChatTemplate([{ role: 'user', content: 'hi' }]), /<\|im_start\|>user\nhi<\|im_end\|>\n<\|im_start\|>assistant\n$/);
  });

  test('tool_choice required: a strict grammar in a tool-call format', async () => {
    const p = await templates.apply({ messages: ASK, tools: TOOLS, tool_choice: 'required' });
    assert.notEqual(p.format, 'Content-only');
    assert.ok(p.grammar.length > 0);
    assert.equal(p.grammarLazy, false);
    assert.match(p.prompt, /<tools>\n.*get_weather/s);
    assert.ok(p.prompt.endsWith('<|im_start|>assistant\n'));
    assert.equal(p.generationPrompt, '<|im_start|>assistant\n');
    assert.equal(p.sampling.grammarPrefill, p.generationPrompt);
    assert.ok(p.preservedTokens.includes('<tool_call>'));
  });

  test('tool_choice auto: a lazy grammar woken by <tool_call>', async () => {
    const p = await templates.apply({ messages: ASK, tools: TOOLS, tool_choice: 'auto' });
    assert.equal(p.grammarLazy, true);
    assert.ok(p.grammar.length > 0);
    assert.ok(p.grammarTriggers.length > 0);
    assert.ok(p.grammarTriggers.some((t) => t.value.startsWith('<tool_call>')));
    // The SPM vocabulary has no <tool_call> token, so the word trigger becomes an escaped pattern.
    assert.deepEqual(p.sampling.grammarTriggerPatterns, p.grammarTriggerPatterns);
    assert.ok(p.grammarTriggerPatterns.length > 0);
    assert.equal(p.sampling.grammarPrefill, null);
  });

  test('tool_choice none: no grammar; a named function: only that tool, required', async () => {
    const none = await templates.apply({ messages: ASK, tools: TOOLS, tool_choice: 'none' });
    assert.equal(none.grammar, '');
    assert.equal(none.sampling.grammar, null);
    const named = await templates.apply({ messages: ASK, tools: TOOLS, tool_choice: { type: 'function', function: { name: 'get_time' } } });
    assert.equal(named.grammarLazy, false);
    assert.match(named.grammar, /get_time/);
    assert.doesNotMatch(named.grammar, /get_weather/);
    await assert.rejects(templates.apply({ messages: ASK, tools: TOOLS, tool_choice: { type: 'function', function: { name: 'nope' } } }), invalid('tool_choice'));
    await assert.rejects(templates.apply({ messages: ASK, tools: TOOLS, tool_choice: 'sometimes' }), invalid('tool_choice'));
  });

  test('tool results and assistant tool calls render back into the conversation', async () => {
    const p = await templates.apply({
      messages: [
        ...ASK,
        { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
        { role: 'tool', tool_call_id: 'call_1', content: 'sunny, 21 C' },
      ],
      tools: TOOLS,
    });
    // Templates that take object arguments get them parsed and re-serialised (llama.cpp's workaround).
    assert.match(p.prompt, /<tool_call>\n\{"name": "get_weather", "arguments": \{"city": ?"Paris"\}\}\n<\/tool_call><\|im_end\|>/);
    assert.match(p.prompt, /<tool_response>\nsunny, 21 C\n<\/tool_response>/);
  });

  test('the parser reads tool calls and reasoning, and never throws on partial text', async () => {
    const p = await templates.apply({ messages: ASK, tools: TOOLS });
    const call = p.parser.parse('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>');
    assert.equal(call.parseError, null);
    assert.equal(call.toolCalls.length, 1);
    assert.equal(call.toolCalls[0]!.name, 'get_weather');
    assert.deepEqual(JSON.parse(call.toolCalls[0]!.arguments), { city: 'Paris' });

    const thought = p.parser.parse('<think>hmm</think>Hello');
    assert.equal(thought.reasoningContent, 'hmm');
    assert.equal(thought.content, 'Hello');

    for (const cut of ['<think>hm', '<tool_call>\n{"name": "get_w', '<tool_ca', '']) {
      const r = p.parser.parse(cut, { partial: true });
      assert.equal(typeof r.content, 'string', cut);
    }

    const raw = await templates.apply({ messages: ASK, reasoning_format: 'none' });
    assert.equal(raw.reasoningFormat, 'none');
    assert.equal(raw.parser.parse('<think>hmm</think>Hello').reasoningContent, '');
  });

  test('enable_thinking false closes the think block in the prompt', async () => {
    const p = await templates.apply({ messages: ASK, enable_thinking: false });
    assert.equal(p.enableThinking, false);
    assert.ok(p.prompt.endsWith('<think>\n\n</think>\n\n'), JSON.stringify(p.prompt.slice(-40)));
  });

  test('bad input is INVALID_ARGUMENT naming the field', async () => {
    await assert.rejects(templates.apply({ messages: ASK, response_format: { type: 'json_schema', json_schema: { schema: { type: 'object', properties: { n: { $ref: '#/nowhere' } } } } } }), invalid('response_format.json_schema'));
    await assert.rejects(templates.apply({ messages: ASK, grammar: 'root ::= "a' }), invalid('grammar'));
    await assert.rejects(templates.apply({ messages: ASK, tools: [{ type: 'function' }] }), invalid('tools'));
    await assert.rejects(templates.apply({ messages: ASK, tools: [{ type: 'retrieval' }] }), invalid('tools'));
    await assert.rejects(templates.apply({ messages: [{ role: 'user' }] }), invalid('messages[0].content'));
    await assert.rejects(templates.apply({ messages: 'hi' as never }), invalid('messages'));
    await assert.rejects(templates.apply({ messages: ASK, reasoning_format: 'loud' }), invalid('reasoning_format'));
    await assert.rejects(templates.apply({ messages: ASK, tools: TOOLS, grammar: 'root ::= "a"' }), invalid('grammar'));
    assert.throws(() => jsonSchemaToGrammar({ type: 'object', properties: { n: { $ref: '#/nowhere' } } }), invalid('schema'));
    assert.throws(() => model.createSampler({ grammar: 'root ::= (' }), (e: unknown) => {
      assert.ok(e instanceof HearthError && e.code === 'INVALID_ARGUMENT');
      assert.match(e.message, /^grammar: the grammar does not parse/);
      return true;
    });
    assert.throws(() => model.createSampler({ grammar: 'root ::= "a"', grammarLazy: true, grammarTriggerPatterns: ['('] }), invalid('grammarTriggerPatterns'));
  });

  test('a JSON-schema grammar forces the output to match the schema', async () => {
    const p = await templates.apply({ messages: [{ role: 'user', content: 'A number, as JSON.' }], response_format: { type: 'json_schema', json_schema: { schema: N_SCHEMA } }, enable_thinking: false });
    assert.ok(p.sampling.grammar);
    assert.equal(p.sampling.grammarPrefill, p.generationPrompt);
    const sampler = model.createSampler({ ...p.sampling });
    try {
      const out = await generate(model, ctx, p.prompt, sampler, 40);
      const msg = p.parser.parse(out.text);
      const body = msg.content.trim().replace(/^```json\s*|\s*```$/g, '');
      const value = JSON.parse(body) as unknown;
      assert.ok(typeof value === 'object' && value !== null && Number.isInteger((value as { n: unknown }).n), out.text);
      assert.deepEqual(Object.keys(value), ['n']);
    } finally {
      sampler.dispose();
    }

    // A plain GBNF grammar, straight from jsonSchemaToGrammar, without the chat template.
    const plain = model.createSampler({ grammar: jsonSchemaToGrammar(N_SCHEMA) });
    try {
      const out = await generate(model, ctx, 'Some JSON:', plain, 40);
      const value = JSON.parse(out.text) as { n: unknown };
      assert.ok(Number.isInteger(value.n), out.text);
    } finally {
      plain.dispose();
    }
  });

  test('tool_choice required: the grammar ends in tool calls, for the named tools only', async () => {
    // llama.cpp lets content come before the calls ("until <tool_call>"), so a random model need not
    // reach one in a few tokens; the grammar's shape is what says a call is required.
    const p = await templates.apply({ messages: ASK, tools: TOOLS.slice(0, 1), tool_choice: 'required', enable_thinking: false });
    const root = p.grammar.split('\n').find((l) => l.startsWith('root ::='));
    assert.match(root ?? '', /tool-calls$/);
    assert.match(p.grammar, /^tool-call ::= "<tool_call>\\n"/m);
    assert.doesNotMatch(p.grammar, /get_time/);
    const sampler = model.createSampler({ ...p.sampling });
    sampler.dispose();
  });

  test('logprobs: the chosen token and the top alternatives from the raw logits', async () => {
    const sampler = model.createSampler({ nProbs: 5 });
    const plain = model.createSampler();
    try {
      const prompt = model.tokenize('The hearth is');
      const batch = new Batch();
      const row = batch.addSequence(prompt, 0, 0, true);
      batch.sample(row, sampler);
      batch.sample(row, plain);
      const [tok] = await ctx.decode(batch);
      const lp = ctx.logprobs(0);
      assert.ok(lp);
      assert.equal(lp.token, tok);
      assert.ok(lp.logprob <= 0);
      assert.equal(lp.top.length, 5);
      for (let i = 1; i < lp.top.length; i++) assert.ok(lp.top[i - 1]!.logprob >= lp.top[i]!.logprob);
      for (const t of lp.top) assert.ok(t.logprob <= 0);
      // Greedy: the chosen token is the most likely one.
      assert.equal(lp.top[0]!.token, tok);
      assert.equal(lp.top[0]!.logprob, lp.logprob);
      // The same values from the copied logits.
      const logits = ctx.logits(row);
      const max = Math.max(...logits);
      const logZ = max + Math.log(logits.reduce((s, l) => s + Math.exp(l - max), 0));
      assert.ok(Math.abs(logits[tok!]! - logZ - lp.logprob) < 1e-3);
      assert.equal(ctx.logprobs(1), null, 'a sampler without nProbs gives none');
      assert.throws(() => ctx.logprobs(2), /no sample 2/);
      ctx.removeSequence(0);

      const only = model.createSampler({ nProbs: 0 });
      try {
        const b2 = new Batch();
        b2.sample(b2.addSequence(prompt, 0, 0, true), only);
        await ctx.decode(b2);
        const one = ctx.logprobs(0);
        assert.ok(one && one.top.length === 0 && one.logprob <= 0);
        ctx.removeSequence(0);
      } finally {
        only.dispose();
      }
    } finally {
      sampler.dispose();
      plain.dispose();
    }
  });
});
