#pragma once

#include "addon.h"
#include "chat.h"  // llama.cpp common/chat.h

namespace hearth {

// A model's chat templates as llama-server --jinja runs them: the prompt, the grammar and triggers that
// constrain tool calls or a JSON schema, and the parser that reads the model's answer back.
class AddonChatTemplates : public Napi::ObjectWrap<AddonChatTemplates> {
  public:
    static Napi::FunctionReference constructor;
    static void Init(Napi::Env env, Napi::Object exports);

    explicit AddonChatTemplates(const Napi::CallbackInfo & info);

  private:
    friend class ChatApplyWorker;

    Napi::Value Apply(const Napi::CallbackInfo & info);
    Napi::Value Info(const Napi::CallbackInfo & info);

    Napi::ObjectReference model_ref_;
    const llama_vocab * vocab_ = nullptr;
    common_chat_templates_ptr tmpls_;
    bool thinking_by_default_ = false;
    std::map<std::string, bool> caps_;
};

// One answer's parser: the PEG arena and settings the template produced for that request.
class AddonChatParser : public Napi::ObjectWrap<AddonChatParser> {
  public:
    static Napi::FunctionReference constructor;
    static void Init(Napi::Env env, Napi::Object exports);

    explicit AddonChatParser(const Napi::CallbackInfo & info);

    common_chat_parser_params params;

  private:
    Napi::Value Parse(const Napi::CallbackInfo & info);
};

}  // namespace hearth
