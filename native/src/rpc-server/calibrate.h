// The calibration mode of hearth's ggml-rpc-server (see calibrate.cpp).
#pragma once

int hearth_calibrate_main(int argc, char ** argv);
