// What a transport needs from whoever launched the job: an allgather of small
// byte strings. Python implements it over a Store (TCP, file, torch c10d) or MPI.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace pycomm {

// Returns every rank's `mine`, indexed by rank. Must be called by all ranks.
using BootstrapAllgather = std::function<std::vector<std::string>(const std::string& mine)>;

}  // namespace pycomm
