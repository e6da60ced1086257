// Device listing and memory reports of hearth's ggml-rpc-server (see devices.cpp).
#pragma once

int hearth_devices_main();
void hearth_start_memory_reporter();
