// `ggml-rpc-server --hearth-seed MODEL.gguf [SHARD.gguf ...] CACHE_DIR`: fills the rpc server's tensor
// cache from a model on this machine's disk, so that a coordinator loading the same model sends hashes
// instead of weights. A split model is given as all its shards: each tensor's bytes are in the shard
// that lists it, and whether the output head is tied to the embedding is a fact of the whole set.
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

struct Shard {
    std::string path;
    gguf_context * ctx;
};

uint64_t fnv_hash(const uint8_t * data, size_t len, uint64_t hash) {
    const uint64_t fnv_prime = 0x100000001b3ULL;
    for (size_t i = 0; i < len; ++i) {
        hash ^= data[i];
        hash *= fnv_prime;
    }
    return hash;
}

enum class Seeded { Cached, Written, Failed };

// Copies tensor i of a shard into the cache under its hash (through a temporary name, so a server
// never reads half a file), reporting progress as it goes; errors are on stderr.
Seeded seed_tensor(const Shard & s, std::ifstream & in, int64_t i, const fs::path & dir, std::vector<uint8_t> & buf, size_t & done, size_t total) {
    std::error_code ec;
    const size_t size = gguf_get_tensor_size(s.ctx, i);
    const size_t offset = gguf_get_data_offset(s.ctx) + gguf_get_tensor_offset(s.ctx, i);
    const fs::path tmp = dir / (".seed-" + std::to_string(i) + "-" + std::to_string(::getpid()));
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    in.seekg((std::streamoff) offset);
    uint64_t hash = 0xcbf29ce484222325ULL;
    for (size_t left = size; left > 0;) {
        const size_t want = left < kChunk ? left : kChunk;
        in.read((char *) buf.data(), (std::streamsize) want);
        if ((size_t) in.gcount() != want) {
            std::fprintf(stderr, "error: %s ends inside tensor %s\n", s.path.c_str(), gguf_get_tensor_name(s.ctx, i));
            out.close();
            fs::remove(tmp, ec);
            return Seeded::Failed;
        }
        hash = fnv_hash(buf.data(), want, hash);
        out.write((const char *) buf.data(), (std::streamsize) want);
        left -= want;
        done += want;
        std::printf("{\"progress\":%zu,\"total\":%zu}\n", done, total);
        std::fflush(stdout);
    }
    out.close();
    if (!out) {
        fs::remove(tmp, ec);
        std::fprintf(stderr, "error: cannot write %s (disk full?)\n", tmp.string().c_str());
        return Seeded::Failed;
    }
    char name[17];
    std::snprintf(name, sizeof(name), "%016" PRIx64, hash);
    const fs::path target = dir / name;
    if (fs::exists(target, ec) && fs::file_size(target, ec) == size) {
        fs::remove(tmp, ec);  // already cached (sent before, or an identical tensor)
        return Seeded::Cached;
    }
    fs::rename(tmp, target, ec);
    if (ec) {
        std::fprintf(stderr, "error: cannot rename %s: %s\n", tmp.string().c_str(), ec.message().c_str());
        fs::remove(tmp, ec);
        return Seeded::Failed;
    }
    return Seeded::Written;
}

}  // namespace

int hearth_seed_main(int argc, char ** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: ggml-rpc-server --hearth-seed MODEL.gguf [SHARD.gguf ...] CACHE_DIR\n");
        return 2;
    }
    const fs::path dir = argv[argc - 1];
    std::vector<Shard> shards;
    auto finish = [&](int status) {
        for (Shard & s : shards) gguf_free(s.ctx);
        return status;
    };
    for (int a = 1; a < argc - 1; a++) {
        gguf_init_params params = {true, nullptr};
        gguf_context * ctx = gguf_init_from_file(argv[a], params);
        if (!ctx) {
            std::fprintf(stderr, "error: %s is not a GGUF file ggml can read\n", argv[a]);
            return finish(1);
        }
        shards.push_back({argv[a], ctx});
    }
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) {
        std::fprintf(stderr, "error: cannot create %s: %s\n", dir.string().c_str(), ec.message().c_str());
        return finish(1);
    }
    // token_embd stays in the coordinator's host memory (llama.cpp never offloads it), so it is never
    // sent, unless the model ties its output head to it: then the head is a copy of it on a worker.
    bool tied = true;
    for (const Shard & s : shards) tied = tied && gguf_find_tensor(s.ctx, "output.weight") < 0;
    auto seeded = [&](const Shard & s, int64_t i) {
        return gguf_get_tensor_size(s.ctx, i) > kHashThreshold && (tied || std::string(gguf_get_tensor_name(s.ctx, i)) != "token_embd.weight");
    };
    size_t total = 0;
    for (const Shard & s : shards) {
        for (int64_t i = 0; i < gguf_get_n_tensors(s.ctx); i++) {
            if (seeded(s, i)) total += gguf_get_tensor_size(s.ctx, i);
        }
    }
    std::vector<uint8_t> buf(kChunk);
    size_t done = 0;
    int files = 0;
    int written = 0;
    std::printf("{\"progress\":0,\"total\":%zu}\n", total);
    std::fflush(stdout);
    for (const Shard & s : shards) {
        std::ifstream in(s.path, std::ios::binary);
        for (int64_t i = 0; i < gguf_get_n_tensors(s.ctx); i++) {
            if (!seeded(s, i)) continue;
            const Seeded r = seed_tensor(s, in, i, dir, buf, done, total);
            if (r == Seeded::Failed) return finish(1);
            files++;
            if (r == Seeded::Written) written++;
        }
    }
    std::printf("{\"done\":true,\"files\":%d,\"written\":%d,\"bytes\":%zu}\n", files, written, total);
    std::fflush(stdout);
    return finish(0);
}
