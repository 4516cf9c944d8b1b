// A polite stop: SIGTERM, SIGINT or SIGUSR1 (what Slurm sends before a time
// limit with --signal, and what scancel sends) asks the job to stop at the
// next chunk boundary instead of dying mid-write. The handler only records
// the signal; the job all-reduces it after writing each chunk, so
// every rank sees the same answer at the same boundary even when the signal
// reached only some of them. A second signal of the same kind restores the
// default action and re-raises it: a user can still force the issue.
#pragma once

namespace ringattn {

// Installs the handlers (idempotent). Before this, signals keep their defaults.
void install_stop_handlers();
// The first stop signal this process received, or 0.
int stop_signal_received();
// "SIGTERM", "SIGUSR1", ... for messages.
const char* stop_signal_name(int sig);

}  // namespace ringattn
