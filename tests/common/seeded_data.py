"""The rule of `ringattn gen`'s values (src/core/seeded_data.hpp), in Python,
for the tests that check what gen wrote (imported, not run)."""
import numpy as np

M = (1 << 64) - 1


def splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & M
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M
    return x ^ (x >> 31)


def seeded(seed, i, amplitude):
    """Element i of the tensor seeded with seed, in [-amplitude, amplitude) (float32)."""
    u = np.float32((splitmix64(splitmix64(seed) ^ i) >> 40) - (1 << 23)) * np.float32(2.0**-23)
    return np.float32(amplitude) * u
