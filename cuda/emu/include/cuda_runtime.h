// The emulation build's cuda_runtime.h (cuda/emu/emu.h): the .cu files include it unchanged.
#pragma once
#include "cuda/emu/emu.h"
