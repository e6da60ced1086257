// AddonChatTemplates, AddonChatParser and jsonSchemaToGrammar: llama.cpp's common chat machinery (Jinja
// templates, tool-call grammars and parsers, json-schema-to-grammar), driven from an OpenAI-shaped
// request the way llama-server's oaicompat_chat_params_parse drives it.
#include "chat-templates.h"

#include <algorithm>
#include <set>

#include "json-schema-to-grammar.h"
#include "log.h"
#include "model.h"
#include "sampler.h"

namespace hearth {

Napi::FunctionReference AddonChatTemplates::constructor;
Napi::FunctionReference AddonChatParser::constructor;

namespace {

[[noreturn]] void Invalid(const std::string & field, const std::string & what) {
    throw NativeError("INVALID_ARGUMENT", field + ": " + what);
}

// llama.cpp's chat code throws std::runtime_error, std::invalid_argument and common_json_error alike;
// each becomes INVALID_ARGUMENT naming the request field it came from.
template <typename F>
auto Checked(const std::string & field, F && f) -> decltype(f()) {
    try {
        return f();
    } catch (const NativeError &) {
        throw;
    } catch (const std::exception & e) {
        Invalid(field, e.what());
    }
}

std::string StripPrefix(std::string s, const std::string & prefix) {
    if (s.rfind(prefix, 0) == 0) s.erase(0, prefix.size());
    return s;
}

const char * TriggerTypeName(common_grammar_trigger_type t) {
    switch (t) {
        case COMMON_GRAMMAR_TRIGGER_TYPE_TOKEN: return "token";
        case COMMON_GRAMMAR_TRIGGER_TYPE_WORD: return "word";
        case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN: return "pattern";
        case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN_FULL: return "pattern_full";
    }
    return "unknown";
}

// Validates a JSON schema the way llama-server uses it: by converting it to a grammar.
std::string SchemaGrammar(const std::string & field, const common_json & schema) {
    if (!schema.is_object() && !schema.is_boolean()) Invalid(field, "must be a JSON schema object");
    return Checked(field, [&] { return json_schema_to_grammar(schema); });
}

Napi::Array StringArray(Napi::Env env, const std::vector<std::string> & v) {
    Napi::Array a = Napi::Array::New(env, v.size());
    for (size_t i = 0; i < v.size(); i++) a.Set(static_cast<uint32_t>(i), Napi::String::New(env, v[i]));
    return a;
}

Napi::Array TokenArray(Napi::Env env, const std::vector<llama_token> & v) {
    Napi::Array a = Napi::Array::New(env, v.size());
    for (size_t i = 0; i < v.size(); i++) a.Set(static_cast<uint32_t>(i), Napi::Number::New(env, v[i]));
    return a;
}

}  // namespace

// --- AddonChatTemplates -------------------------------------------------------------------------------

// new AddonChatTemplates(model, template: string | null): the model's own template (and its tool_use
// variant), or `template` in its place; ChatML when the model has none, as llama-server does.
AddonChatTemplates::AddonChatTemplates(const Napi::CallbackInfo & info) : Napi::ObjectWrap<AddonChatTemplates>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject() || !info[0].As<Napi::Object>().InstanceOf(AddonModel::constructor.Value())) {
        ThrowJs(env, "INVALID_ARGUMENT", "AddonChatTemplates(model, template): model must be an AddonModel");
    }
    AddonModel * model = AddonModel::Unwrap(info[0].As<Napi::Object>());
    if (model->model() == nullptr) ThrowJs(env, "NOT_LOADED", "the model is not loaded");
    const std::string override_src = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "";
    model_ref_ = Napi::Persistent(info[0].As<Napi::Object>());
    vocab_ = model->vocab();
    try {
        tmpls_ = common_chat_templates_init(model->model(), override_src);
        caps_ = common_chat_templates_get_caps(tmpls_.get());
    } catch (const std::exception & e) {
        ThrowJs(env, "INVALID_ARGUMENT", std::string("chatTemplate: the template does not parse: ") + e.what());
    }
    // llama-server: thinking is on when the template supports it (and --reasoning is not off).
    try {
        thinking_by_default_ = common_chat_templates_support_enable_thinking(tmpls_.get());
    } catch (const std::exception &) {
        thinking_by_default_ = false;
    }
}

// info(): {source, toolUseSource, supportsThinking, caps}
Napi::Value AddonChatTemplates::Info(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("source", common_chat_templates_source(tmpls_.get()));
    const std::string tool_use = common_chat_templates_source(tmpls_.get(), "tool_use");
    o.Set("toolUseSource", tool_use.empty() ? env.Null() : Napi::Value(Napi::String::New(env, tool_use)));
    o.Set("supportsThinking", thinking_by_default_);
    Napi::Object caps = Napi::Object::New(env);
    for (const auto & [k, v] : caps_) caps.Set(k, v);
    o.Set("caps", caps);
    return o;
}

class ChatApplyWorker : public PromiseWorker {
  public:
    ChatApplyWorker(Napi::Env env, AddonChatTemplates * t, std::string request)
        : PromiseWorker(env, "hearth.chatApply"), t_(t), request_(std::move(request)) {
        ref_ = Napi::Persistent(t->Value());
        // The vocabulary is read on the pool thread; the model must outlive this call.
        model_ = AddonModel::Unwrap(t->model_ref_.Value());
        model_->live_contexts++;
    }
    ~ChatApplyWorker() override { model_->live_contexts--; }

  protected:
    void Run() override {
        common_json body = Checked("request", [&] { return common_json::parse(request_); });
        if (!body.is_object()) Invalid("request", "must be a JSON object");
        auto has = [&](const char * key) { return body.contains(key) && !body.at(key).is_null(); };
        common_chat_templates_inputs inputs;

        // messages, with llama-server's checks before the library's own
        if (!has("messages")) Invalid("messages", "is required");
        const common_json & messages = body.at("messages");
        if (!messages.is_array()) Invalid("messages", "must be an array");
        for (size_t i = 0; i < messages.size(); i++) {
            const common_json & m = messages.at(i);
            const std::string field = "messages[" + std::to_string(i) + "]";
            if (!m.is_object()) Invalid(field, "must be an object");
            if (!m.contains("role") || !m.at("role").is_string()) Invalid(field + ".role", "must be a string");
            const std::string role = m.at("role");
            if (role != "assistant" && !m.contains("content")) Invalid(field + ".content", "is required for a '" + role + "' message");
            if (role == "assistant" && !m.contains("content") && !m.contains("tool_calls")) {
                Invalid(field, "an assistant message needs content or tool_calls");
            }
        }
        inputs.messages = Checked("messages", [&] {
            try {
                return common_chat_msgs_parse_oaicompat(messages);
            } catch (const std::exception & e) {
                throw std::runtime_error(StripPrefix(e.what(), "Failed to parse messages: "));
            }
        });

        // tools and tool_choice; a named function keeps only that tool and requires a call to it
        common_json tools = has("tools") ? body.at("tools") : common_json();
        if (!tools.is_null() && !tools.is_array()) Invalid("tools", "must be an array");
        std::string choice = "auto";
        if (has("tool_choice")) {
            const common_json & tc = body.at("tool_choice");
            if (tc.is_string()) {
                choice = tc.get<std::string>();
            } else if (tc.is_object()) {
                const std::string name = Checked("tool_choice.function.name", [&] { return tc.at("function").at("name").get<std::string>(); });
                common_json only = common_json::array();
                for (size_t i = 0; tools.is_array() && i < tools.size(); i++) {
                    const common_json & tool = tools.at(i);
                    if (tool.is_object() && tool.contains("function") && tool.at("function").is_object() &&
                        tool.at("function").contains("name") && tool.at("function").at("name").is_string() &&
                        tool.at("function").at("name").get<std::string>() == name) {
                        only.push_back(tool);
                    }
                }
                if (only.empty()) Invalid("tool_choice", "names the function '" + name + "', which is not among the tools");
                tools = only;
                choice = "required";
            } else {
                Invalid("tool_choice", "must be 'none', 'auto', 'required' or {type: 'function', function: {name}}");
            }
        }
        inputs.tool_choice = Checked("tool_choice", [&] { return common_chat_tool_choice_parse_oaicompat(choice); });
        inputs.tools = Checked("tools", [&] {
            try {
                return common_chat_tools_parse_oaicompat(tools);
            } catch (const std::exception & e) {
                std::string what = StripPrefix(e.what(), "Failed to parse tools: ");
                throw std::runtime_error(what.substr(0, what.find("; tools = ")));
            }
        });
        for (size_t i = 0; i < inputs.tools.size(); i++) {
            const std::string field = "tools[" + std::to_string(i) + "].function.parameters";
            SchemaGrammar(field, Checked(field, [&] { return common_json::parse(inputs.tools[i].parameters); }));
        }
        const bool has_tools = !inputs.tools.empty();

        // response_format / json_schema, as llama-server reads them
        common_json schema = has("json_schema") ? body.at("json_schema") : common_json();
        std::string schema_field = "json_schema";
        if (has("response_format")) {
            const common_json & rf = body.at("response_format");
            if (!rf.is_object()) Invalid("response_format", "must be an object");
            const std::string type = Checked("response_format.type", [&] { return rf.value("type", std::string()); });
            if (type == "json_object") {
                if (rf.contains("schema") || schema.is_null()) {
                    schema = rf.value("schema", common_json::object());
                    schema_field = "response_format.schema";
                }
            } else if (type == "json_schema") {
                const common_json wrapper = rf.value("json_schema", common_json::object());
                if (!wrapper.is_object()) Invalid("response_format.json_schema", "must be an object");
                schema = wrapper.value("schema", common_json::object());
                schema_field = "response_format.json_schema";
            } else if (!type.empty() && type != "text") {
                Invalid("response_format.type", "must be 'text', 'json_object' or 'json_schema', not '" + type + "'");
            }
        }
        if (schema.is_object() && schema.empty()) schema["type"] = "object";  // an empty schema: any object
        if (!schema.is_null()) {
            SchemaGrammar(schema_field, schema);
            inputs.json_schema = schema.dump();
        }

        if (has("grammar")) {
            if (!body.at("grammar").is_string()) Invalid("grammar", "must be a string (GBNF)");
            inputs.grammar = body.at("grammar").get<std::string>();
        }
        if (!inputs.grammar.empty()) {
            if (!inputs.json_schema.empty()) Invalid("grammar", "cannot be combined with a JSON schema (response_format)");
            if (has_tools && inputs.tool_choice != COMMON_CHAT_TOOL_CHOICE_NONE) Invalid("grammar", "cannot be combined with tools");
            llama_sampler_free(InitGrammarSampler(t_->vocab_, inputs.grammar, false, {}, {}));
        }

        inputs.use_jinja = true;
        const auto parallel = t_->caps_.find("supports_parallel_tool_calls");  // find: other applies read caps_ too
        inputs.parallel_tool_calls = parallel != t_->caps_.end() && parallel->second;
        if (has("parallel_tool_calls")) {
            if (!body.at("parallel_tool_calls").is_boolean()) Invalid("parallel_tool_calls", "must be a boolean");
            inputs.parallel_tool_calls = body.at("parallel_tool_calls").get<bool>();
        }
        inputs.add_generation_prompt = true;
        if (has("add_generation_prompt")) {
            if (!body.at("add_generation_prompt").is_boolean()) Invalid("add_generation_prompt", "must be a boolean");
            inputs.add_generation_prompt = body.at("add_generation_prompt").get<bool>();
        }
        // llama-server's prefill_assistant: a trailing assistant message is continued, not closed
        if (!inputs.messages.empty() && inputs.messages.back().role == "assistant") {
            if (inputs.messages.size() >= 2 && inputs.messages[inputs.messages.size() - 2].role == "assistant") {
                Invalid("messages", "cannot end with two or more assistant messages");
            }
            if (!inputs.messages.back().tool_calls.empty()) {
                Invalid("messages", "cannot continue a final assistant message that contains tool calls");
            }
            inputs.continue_final_message = COMMON_CHAT_CONTINUATION_AUTO;
            inputs.add_generation_prompt = false;
        }

        inputs.reasoning_format = COMMON_REASONING_FORMAT_DEEPSEEK;  // llama-server's default
        if (has("reasoning_format")) {
            if (!body.at("reasoning_format").is_string()) Invalid("reasoning_format", "must be a string");
            inputs.reasoning_format = Checked("reasoning_format", [&] { return common_reasoning_format_from_name(body.at("reasoning_format").get<std::string>()); });
        }

        inputs.enable_thinking = t_->thinking_by_default_;
        if (has("chat_template_kwargs")) {
            const common_json & kw = body.at("chat_template_kwargs");
            if (!kw.is_object()) Invalid("chat_template_kwargs", "must be an object");
            for (const auto & item : kw.items()) inputs.chat_template_kwargs[item.key()] = item.value().dump();
            auto it = inputs.chat_template_kwargs.find("enable_thinking");
            if (it != inputs.chat_template_kwargs.end()) {
                if (it->second == "true") inputs.enable_thinking = true;
                else if (it->second == "false") inputs.enable_thinking = false;
                else Invalid("chat_template_kwargs.enable_thinking", "must be a boolean");
            }
        }
        if (has("enable_thinking")) {
            if (!body.at("enable_thinking").is_boolean()) Invalid("enable_thinking", "must be a boolean");
            inputs.enable_thinking = body.at("enable_thinking").get<bool>();
        }
        if (has("reasoning_effort")) {
            const std::string effort = Checked("reasoning_effort", [&] { return body.at("reasoning_effort").get<std::string>(); });
            if (effort == "none") {
                inputs.enable_thinking = false;
                inputs.chat_template_kwargs.erase("reasoning_effort");
            } else if (!effort.empty()) {
                inputs.chat_template_kwargs["reasoning_effort"] = common_json(effort).dump();
            }
        }

        chat_ = Checked("messages", [&] {
            try {
                return common_chat_templates_apply(t_->tmpls_.get(), inputs);
            } catch (const std::exception & e) {
                throw std::runtime_error(std::string("the chat template could not render this conversation: ") + e.what());
            }
        });
        enable_thinking_ = inputs.enable_thinking;

        parser_ = common_chat_parser_params(chat_);
        parser_.reasoning_format = inputs.reasoning_format;
        parser_.is_continuation = inputs.continue_final_message != COMMON_CHAT_CONTINUATION_NONE;
        parser_.parse_tool_calls = has_tools && inputs.tool_choice != COMMON_CHAT_TOOL_CHOICE_NONE;
        if (!chat_.parser.empty()) {
            Checked("messages", [&] {
                parser_.parser.load(chat_.parser);
                return 0;
            });
        }

        // Triggers and preserved tokens as llama-server's sampling setup reads them: a trigger word that
        // is one preserved token triggers on that token; other words become escaped patterns.
        const llama_vocab * vocab = t_->vocab_;
        std::set<llama_token> preserved;
        for (const auto & p : chat_.preserved_tokens) {
            auto ids = common_tokenize(vocab, p, false, true);
            if (ids.size() == 1) preserved.insert(ids[0]);
        }
        preserved_ids_.assign(preserved.begin(), preserved.end());
        for (const auto & tr : chat_.grammar_triggers) {
            switch (tr.type) {
                case COMMON_GRAMMAR_TRIGGER_TYPE_WORD: {
                    auto ids = common_tokenize(vocab, tr.value, false, true);
                    if (ids.size() == 1 && preserved.count(ids[0]) > 0) trigger_tokens_.push_back(ids[0]);
                    else trigger_patterns_.push_back(regex_escape(tr.value));
                    break;
                }
                case COMMON_GRAMMAR_TRIGGER_TYPE_TOKEN: trigger_tokens_.push_back(tr.token); break;
                case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN: trigger_patterns_.push_back(tr.value); break;
                case COMMON_GRAMMAR_TRIGGER_TYPE_PATTERN_FULL: {
                    const std::string & p = tr.value;
                    trigger_patterns_.push_back(p.empty() ? "^$" : (p.front() != '^' ? "^" : "") + p + (p.back() != '$' ? "$" : ""));
                    break;
                }
            }
        }
        if (chat_.grammar_lazy && !chat_.grammar.empty() && trigger_patterns_.empty() && trigger_tokens_.empty()) {
            Invalid("tools", "the chat template produced a lazy grammar without triggers");
        }
    }

    Napi::Value Result(Napi::Env env) override {
        Napi::Object o = Napi::Object::New(env);
        o.Set("prompt", chat_.prompt);
        o.Set("format", common_chat_format_name(chat_.format));
        o.Set("grammar", chat_.grammar);
        o.Set("grammarLazy", chat_.grammar_lazy);
        Napi::Array triggers = Napi::Array::New(env, chat_.grammar_triggers.size());
        for (size_t i = 0; i < chat_.grammar_triggers.size(); i++) {
            const auto & tr = chat_.grammar_triggers[i];
            Napi::Object t = Napi::Object::New(env);
            t.Set("type", TriggerTypeName(tr.type));
            t.Set("value", tr.value);
            t.Set("token", tr.token == LLAMA_TOKEN_NULL ? env.Null() : Napi::Value(Napi::Number::New(env, tr.token)));
            triggers.Set(static_cast<uint32_t>(i), t);
        }
        o.Set("grammarTriggers", triggers);
        o.Set("grammarTriggerPatterns", StringArray(env, trigger_patterns_));
        o.Set("grammarTriggerTokens", TokenArray(env, trigger_tokens_));
        o.Set("preservedTokens", StringArray(env, chat_.preserved_tokens));
        o.Set("preservedTokenIds", TokenArray(env, preserved_ids_));
        o.Set("additionalStops", StringArray(env, chat_.additional_stops));
        o.Set("generationPrompt", chat_.generation_prompt);
        o.Set("supportsThinking", chat_.supports_thinking);
        o.Set("thinkingStartTag", chat_.thinking_start_tag);
        o.Set("thinkingEndTags", StringArray(env, chat_.thinking_end_tags));
        o.Set("enableThinking", enable_thinking_);
        o.Set("reasoningFormat", common_reasoning_format_name(parser_.reasoning_format));
        Napi::Object parser = AddonChatParser::constructor.New({});
        AddonChatParser::Unwrap(parser)->params = std::move(parser_);
        o.Set("parser", parser);
        return o;
    }

  private:
    AddonChatTemplates * t_;
    AddonModel * model_;
    Napi::ObjectReference ref_;
    std::string request_;
    common_chat_params chat_;
    common_chat_parser_params parser_;
    bool enable_thinking_ = false;
    std::vector<std::string> trigger_patterns_;
    std::vector<llama_token> trigger_tokens_;
    std::vector<llama_token> preserved_ids_;
};

// apply(requestJson: string): Promise<ChatApplyResult>. The request holds OpenAI chat fields: messages,
// tools, tool_choice, response_format | json_schema, grammar, parallel_tool_calls, reasoning_format,
// enable_thinking, chat_template_kwargs, reasoning_effort, add_generation_prompt.
Napi::Value AddonChatTemplates::Apply(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsString()) ThrowJs(env, "INVALID_ARGUMENT", "apply(requestJson): requestJson must be a string");
    if (AddonModel::Unwrap(model_ref_.Value())->model() == nullptr) ThrowJs(env, "NOT_LOADED", "the model was disposed");
    auto * worker = new ChatApplyWorker(env, this, info[0].As<Napi::String>().Utf8Value());
    worker->Queue();
    return worker->Promise();
}

void AddonChatTemplates::Init(Napi::Env env, Napi::Object exports) {
    Napi::Function fn = DefineClass(env, "AddonChatTemplates",
                                    {
                                        InstanceMethod("apply", &AddonChatTemplates::Apply),
                                        InstanceMethod("info", &AddonChatTemplates::Info),
                                    });
    constructor = Napi::Persistent(fn);
    constructor.SuppressDestruct();
    exports.Set("AddonChatTemplates", fn);
}

// --- AddonChatParser ----------------------------------------------------------------------------------

// Made by apply(); constructed from JavaScript it parses everything as plain content.
AddonChatParser::AddonChatParser(const Napi::CallbackInfo & info) : Napi::ObjectWrap<AddonChatParser>(info) {}

// parse(text, isPartial): {content, reasoningContent, toolCalls: [{name, arguments, id}], parseError}
// A partial parse never throws: text cut mid-marker is what streaming sees. A final parse that does not
// match the format (llama-server answers that with an error) gives the whole text as content and says why.
Napi::Value AddonChatParser::Parse(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsString()) ThrowJs(env, "INVALID_ARGUMENT", "parse(text, isPartial): text must be a string");
    const std::string text = info[0].As<Napi::String>().Utf8Value();
    const bool partial = info.Length() > 1 && info[1].ToBoolean().Value();
    common_chat_msg msg;
    std::string error;
    try {
        msg = common_chat_parse(text, partial, params);
    } catch (const std::exception & e) {
        error = e.what();
        msg = common_chat_msg();
        if (!partial) msg.content = text;
    }
    Napi::Object o = Napi::Object::New(env);
    o.Set("content", msg.content.empty() && !msg.content_parts.empty() ? msg.render_content() : msg.content);
    o.Set("reasoningContent", msg.reasoning_content);
    Napi::Array calls = Napi::Array::New(env, msg.tool_calls.size());
    for (size_t i = 0; i < msg.tool_calls.size(); i++) {
        Napi::Object c = Napi::Object::New(env);
        c.Set("name", msg.tool_calls[i].name);
        c.Set("arguments", msg.tool_calls[i].arguments);
        c.Set("id", msg.tool_calls[i].id);
        calls.Set(static_cast<uint32_t>(i), c);
    }
    o.Set("toolCalls", calls);
    o.Set("parseError", error.empty() ? env.Null() : Napi::Value(Napi::String::New(env, error)));
    return o;
}

void AddonChatParser::Init(Napi::Env env, Napi::Object exports) {
    Napi::Function fn = DefineClass(env, "AddonChatParser", {InstanceMethod("parse", &AddonChatParser::Parse)});
    constructor = Napi::Persistent(fn);
    constructor.SuppressDestruct();
    exports.Set("AddonChatParser", fn);
}

// --- jsonSchemaToGrammar --------------------------------------------------------------------------------

// jsonSchemaToGrammar(schemaJson: string): string (GBNF), as llama-server converts response_format.
Napi::Value JsonSchemaToGrammar(const Napi::CallbackInfo & info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsString()) ThrowJs(env, "INVALID_ARGUMENT", "jsonSchemaToGrammar(schemaJson): schemaJson must be a string");
    try {
        common_json schema = Checked("schema", [&] { return common_json::parse(info[0].As<Napi::String>().Utf8Value()); });
        if (schema.is_object() && schema.empty()) schema["type"] = "object";
        return Napi::String::New(env, SchemaGrammar("schema", schema));
    } catch (const NativeError & e) {
        ThrowJs(env, e.code(), e.what());
    }
}

void InitChat(Napi::Env env, Napi::Object exports) {
    // common's logger would print on a thread of its own, past hearth's log routing; everything it says
    // on the paths used here also reaches the caller as an error or a parseError.
    common_log_pause(common_log_main());
    AddonChatTemplates::Init(env, exports);
    AddonChatParser::Init(env, exports);
    exports.Set("jsonSchemaToGrammar", Napi::Function::New(env, JsonSchemaToGrammar, "jsonSchemaToGrammar"));
}

}  // namespace hearth
