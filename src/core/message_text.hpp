// Numbers as the one-line messages and --help print them: short, exact
// enough, never the 309 digits of a printed FLT_MAX, never "1 tokens".
//
// Includes: <cstdint>, <string>.
#pragma once

#include <cstdint>
#include <string>

namespace ringattn {

// As %g prints it: "3.40282e+38", "0.125", "512".
std::string short_number(double x);
// "512 B", "3.2 MiB", "4.0 PiB": binary units, one decimal.
std::string binary_bytes(double bytes);
// "1 token", "3 tokens": a count and its noun, in agreement.
std::string counted(std::int64_t n, const std::string& noun);

}  // namespace ringattn
