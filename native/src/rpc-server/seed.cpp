// `ggml-rpc-server --hearth-seed MODEL.gguf CACHE_DIR`: fills the rpc server's tensor cache from a
// model on this machine's disk, so that a coordinator loading the same model sends hashes instead of
// weights.
//
// ggml-rpc's cache (ggml/src/ggml-rpc/ggml-rpc.cpp): for a weight tensor over 10 MiB the client first
// sends RPC_CMD_SET_TENSOR_HASH with the FNV-1a 64 hash of the tensor's bytes, and a server started with
// a cache directory answers from the file `<dir>/<hash as 16 hex digits>` when it exists. llama.cpp's
// loader sets each weight whole, with the bytes exactly as they are in the GGUF, so the same hash over
// the file's tensor data names the same file. Each file is written under a temporary name and renamed,
// so a server never reads half a file.
//
// Output: JSON lines on stdout: {"progress":done,"total":bytes} while hashing, then
// {"done":true,"files":n,"written":n,"bytes":b}.
#include "seed.h"

#include "gguf.h"

#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

namespace fs = std::filesystem;

namespace {

// Mirrors ggml-rpc.cpp: tensors at or below this size are always sent.
constexpr size_t kHashThreshold = 10 * 1024 * 1024;
constexpr size_t kChunk = 16 * 1024 * 1024;

uint64_t fnv_hash(const uint8_t * data, size_t len, uint64_t hash) {
    const uint64_t fnv_prime = 0x100000001b3ULL;
    for (size_t i = 0; i < len; ++i) {
        hash ^= data[i];
        hash *= fnv_prime;
    }
    return hash;
}

}  // namespace

int hearth_seed_main(int argc, char ** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: ggml-rpc-server --hearth-seed MODEL.gguf CACHE_DIR\n");
        return 2;
    }
    const std::string model = argv[1];
    const fs::path dir = argv[2];
    gguf_init_params params = {true, nullptr};
    gguf_context * ctx = gguf_init_from_file(model.c_str(), params);
    if (!ctx) {
        std::fprintf(stderr, "error: %s is not a GGUF file ggml can read\n", model.c_str());
        return 1;
    }
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) {
        std::fprintf(stderr, "error: cannot create %s: %s\n", dir.string().c_str(), ec.message().c_str());
        gguf_free(ctx);
        return 1;
    }
    const size_t data_offset = gguf_get_data_offset(ctx);
    const int64_t n = gguf_get_n_tensors(ctx);
    size_t total = 0;
    // token_embd stays in the coordinator's host memory (llama.cpp never offloads it), so it is never
    // sent, unless the model ties its output head to it: then the head is a copy of it on a worker.
    const bool tied = gguf_find_tensor(ctx, "output.weight") < 0;
    auto seeded = [&](int64_t i) {
        return gguf_get_tensor_size(ctx, i) > kHashThreshold && (tied || std::string(gguf_get_tensor_name(ctx, i)) != "token_embd.weight");
    };
    for (int64_t i = 0; i < n; i++) {
        if (seeded(i)) total += gguf_get_tensor_size(ctx, i);
    }
    std::ifstream in(model, std::ios::binary);
    std::vector<uint8_t> buf(kChunk);
    size_t done = 0;
    int files = 0;
    int written = 0;
    int status = 0;
    std::printf("{\"progress\":0,\"total\":%zu}\n", total);
    std::fflush(stdout);
    for (int64_t i = 0; i < n && status == 0; i++) {
        const size_t size = gguf_get_tensor_size(ctx, i);
        if (!seeded(i)) continue;
        const size_t offset = data_offset + gguf_get_tensor_offset(ctx, i);
        const fs::path tmp = dir / (".seed-" + std::to_string(i) + "-" + std::to_string(::getpid()));
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        in.seekg((std::streamoff) offset);
        uint64_t hash = 0xcbf29ce484222325ULL;
        size_t left = size;
        while (left > 0) {
            const size_t want = left < kChunk ? left : kChunk;
            in.read((char *) buf.data(), (std::streamsize) want);
            if ((size_t) in.gcount() != want) {
                std::fprintf(stderr, "error: %s ends inside tensor %s\n", model.c_str(), gguf_get_tensor_name(ctx, i));
                status = 1;
                break;
            }
            hash = fnv_hash(buf.data(), want, hash);
            out.write((const char *) buf.data(), (std::streamsize) want);
            left -= want;
            done += want;
            std::printf("{\"progress\":%zu,\"total\":%zu}\n", done, total);
            std::fflush(stdout);
        }
        out.close();
        if (status != 0 || !out) {
            fs::remove(tmp, ec);
            if (status == 0) {
                std::fprintf(stderr, "error: cannot write %s (disk full?)\n", tmp.string().c_str());
                status = 1;
            }
            break;
        }
        char name[17];
        std::snprintf(name, sizeof(name), "%016" PRIx64, hash);
        const fs::path target = dir / name;
        files++;
        if (fs::exists(target, ec) && fs::file_size(target, ec) == size) {
            fs::remove(tmp, ec);  // already cached (sent before, or an identical tensor)
            continue;
        }
        fs::rename(tmp, target, ec);
        if (ec) {
            std::fprintf(stderr, "error: cannot rename %s: %s\n", tmp.string().c_str(), ec.message().c_str());
            fs::remove(tmp, ec);
            status = 1;
            break;
        }
        written++;
    }
    gguf_free(ctx);
    if (status == 0) {
        std::printf("{\"done\":true,\"files\":%d,\"written\":%d,\"bytes\":%zu}\n", files, written, total);
        std::fflush(stdout);
    }
    return status;
}
