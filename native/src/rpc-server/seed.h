// The tensor-cache seeding mode of hearth's ggml-rpc-server (see seed.cpp).
#pragma once

int hearth_seed_main(int argc, char ** argv);
