// The CLI's own documentation: one-line summaries and examples of the
// subcommands, `ringattn help [SUBCOMMAND...]`, and the reference that
// README's "The CLI in full" and docs/cli.md are generated from (both are
// read off the parser, so they list exactly the flags it accepts).
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

namespace ringattn::cli {

// Sets each subcommand's summary and example, and lists them in the order
// of the summary table.
void describe_subcommands(CLI::App& app);

// One synopsis per subcommand ("mpirun -np P ringattn run [--input INPUT]
// ..."), wrapped at 80 columns: README's "The CLI in full".
std::string cli_synopsis(CLI::App& app);

// docs/cli.md: the synopsis, then every subcommand's full help.
std::string cli_reference_markdown(CLI::App& app);

// `ringattn help [SUBCOMMAND...]`: that subcommand's help on stdout (0), or
// a usage error (2) for a name that is none.
int print_help(CLI::App& app, const std::vector<std::string>& words);

}  // namespace ringattn::cli
