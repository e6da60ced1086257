// ggml-rpc-server as upstream builds it, with SIGPIPE ignored and, when started by hearth, tied to
// the life of its parent.
//
// The server sends without MSG_NOSIGNAL. A process spawned by Node gets SIGPIPE's default action back,
// so a client that disconnects before reading a reply would kill the server. Ignoring the signal turns
// that into an EPIPE, which the server already handles by dropping the client.
//
// HEARTH_PARENT_PID=<pid>: the kernel sends SIGKILL to this server when that parent dies, however it
// dies (a supervisor killed with SIGKILL cannot clean up after itself).
//
// `--hearth-calibrate [-d DEVICES] [-t THREADS]`: measure each device's decode speed and exit
// (calibrate.cpp); the worker runs it once at start, with the settings it serves with.
// `--hearth-seed MODEL.gguf [SHARD.gguf ...] CACHE_DIR`: fill the tensor cache from a model on disk (seed.cpp).
// `--hearth-devices`: the build and the local devices with their memory, as JSON (devices.cpp); while
// serving with HEARTH_MEMORY_FD set, the devices' memory on that descriptor every few seconds.
#include "calibrate.h"
#include "devices.h"
#include "seed.h"

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#ifdef __linux__
#include <sys/prctl.h>
#include <unistd.h>
#endif

int hearth_upstream_rpc_server_main(int argc, char ** argv);

int main(int argc, char ** argv) {
    if (argc > 1 && std::strcmp(argv[1], "--hearth-calibrate") == 0) return hearth_calibrate_main(argc - 1, argv + 1);
    if (argc > 1 && std::strcmp(argv[1], "--hearth-seed") == 0) return hearth_seed_main(argc - 1, argv + 1);
    if (argc > 1 && std::strcmp(argv[1], "--hearth-devices") == 0) return hearth_devices_main();
#ifndef _WIN32
    std::signal(SIGPIPE, SIG_IGN);
#endif
#ifdef __linux__
    if (const char * parent = std::getenv("HEARTH_PARENT_PID")) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        // The parent may have died before prctl took effect.
        if (std::atol(parent) != static_cast<long>(getppid())) {
            std::fprintf(stderr, "ggml-rpc-server: parent %s is gone, exiting\n", parent);
            return 1;
        }
    }
#endif
    hearth_start_memory_reporter();
    return hearth_upstream_rpc_server_main(argc, argv);
}
