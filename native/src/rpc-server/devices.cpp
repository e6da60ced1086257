// What the worker learns from its rpc server's executable rather than from the addon, so that the
// worker daemon itself never initialises a GPU backend (no CUDA or Metal context of its own), and the
// memory figures it reports are those of the process that owns the devices:
//
// - `ggml-rpc-server --hearth-devices`: one JSON line with the build (ggml version and commit, RPC
//   protocol, backend registries) and the local devices (name, description, backend, type, free and
//   total memory), then exit;
// - serving with HEARTH_MEMORY_FD=<fd>: a thread writes {"memory":[{"name","free","total"},...]} to that
//   file descriptor every HEARTH_MEMORY_MS (default 2000) ms, as the serving process sees its devices,
//   and stops when the reader goes away.
#include "devices.h"

#include "ggml-backend.h"
#include "ggml-rpc.h"
#include "ggml.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#ifndef _WIN32
#include <unistd.h>
#endif

namespace {

std::string json_string(const char * s) {
    std::string out = "\"";
    for (const char * p = s ? s : ""; *p; p++) {
        if (*p == '"' || *p == '\\') out += '\\';
        if ((unsigned char) *p < 0x20) continue;
        out += *p;
    }
    return out + "\"";
}

const char * type_name(enum ggml_backend_dev_type t) {
    switch (t) {
        case GGML_BACKEND_DEVICE_TYPE_CPU: return "cpu";
        case GGML_BACKEND_DEVICE_TYPE_GPU: return "gpu";
        case GGML_BACKEND_DEVICE_TYPE_IGPU: return "igpu";
        default: return "accel";
    }
}

bool is_rpc(ggml_backend_dev_t dev) {
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
    return reg != nullptr && std::string(ggml_backend_reg_name(reg)) == "RPC";
}

// The local devices as a JSON array: their memory now, and with `describe` what they are.
std::string devices_json(bool describe, const char * free_key, const char * total_key) {
    std::string out = "[";
    bool first = true;
    for (size_t i = 0; i < ggml_backend_dev_count(); i++) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        if (is_rpc(dev)) continue;
        size_t free = 0, total = 0;
        ggml_backend_dev_memory(dev, &free, &total);
        out += std::string(first ? "" : ",") + "{\"name\":" + json_string(ggml_backend_dev_name(dev));
        if (describe) {
            ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
            out += ",\"description\":" + json_string(ggml_backend_dev_description(dev)) + ",\"backend\":" + json_string(reg ? ggml_backend_reg_name(reg) : "") +
                   ",\"type\":\"" + type_name(ggml_backend_dev_type(dev)) + "\"";
        }
        out += std::string(",\"") + free_key + "\":" + std::to_string(free) + ",\"" + total_key + "\":" + std::to_string(total) + "}";
        first = false;
    }
    return out + "]";
}

}  // namespace

int hearth_devices_main() {
    std::string out = "{\"system\":{\"ggmlVersion\":" + json_string(ggml_version()) + ",\"ggmlCommit\":" + json_string(ggml_commit());
    out += ",\"rpcProtocol\":\"" + std::to_string(RPC_PROTO_MAJOR_VERSION) + "." + std::to_string(RPC_PROTO_MINOR_VERSION) + "." +
           std::to_string(RPC_PROTO_PATCH_VERSION) + "\",\"backends\":[";
    for (size_t i = 0; i < ggml_backend_reg_count(); i++) {
        out += (i ? "," : "") + json_string(ggml_backend_reg_name(ggml_backend_reg_get(i)));
    }
    out += "]},\"devices\":" + devices_json(true, "freeBytes", "totalBytes") + "}\n";
    std::fputs(out.c_str(), stdout);
    std::fflush(stdout);
    return 0;
}

void hearth_start_memory_reporter() {
#ifndef _WIN32
    const char * fd_text = std::getenv("HEARTH_MEMORY_FD");
    if (!fd_text) return;
    const int fd = std::atoi(fd_text);
    const char * ms_text = std::getenv("HEARTH_MEMORY_MS");
    const int ms = ms_text ? std::max(100, std::atoi(ms_text)) : 2000;
    std::thread([fd, ms]() {
        for (;;) {
            const std::string line = "{\"memory\":" + devices_json(false, "free", "total") + "}\n";
            size_t off = 0;
            while (off < line.size()) {
                const ssize_t n = ::write(fd, line.data() + off, line.size() - off);
                if (n <= 0) return;  // the worker closed its end: nobody is listening any more
                off += (size_t) n;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(ms));
        }
    }).detach();
#endif
}
