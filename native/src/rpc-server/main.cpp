// ggml-rpc-server as upstream builds it, with SIGPIPE ignored.
//
// The server sends without MSG_NOSIGNAL. A process spawned by Node gets SIGPIPE's default action back,
// so a client that disconnects before reading a reply would kill the server. Ignoring the signal turns
// that into an EPIPE, which the server already handles by dropping the client.
#include <csignal>

int hearth_upstream_rpc_server_main(int argc, char ** argv);

int main(int argc, char ** argv) {
#ifndef _WIN32
    std::signal(SIGPIPE, SIG_IGN);
#endif
    return hearth_upstream_rpc_server_main(argc, argv);
}
