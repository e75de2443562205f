// A fuzzing driver for compilers without libFuzzer (g++): it calls a target's
// LLVMFuzzerTestOneInput on every file of the seed corpus, then on deterministic mutations of
// them (bit flips, byte inserts and deletes, splices of two corpus entries, interesting
// integers written at random offsets), until a case count or a time budget runs out. Without
// coverage feedback it finds less than libFuzzer per case, but it runs the same targets under
// ASan/UBSan on any CI machine, and the same seed gives the same cases.
//
// It takes the subset of libFuzzer's flags that scripts/fuzz-native.sh uses, so the script
// drives both engines alike:
//   fuzz_<target> [-flag=value ...] CORPUS_DIR_OR_FILE ...
//     -runs=N             mutated cases after the corpus (default: unlimited)
//     -max_total_time=S   stop after S seconds (default: unlimited; with neither limit, only
//                         the given inputs are run, which replays crash files)
//     -seed=N             mutation seed (default 1)
//     -timeout=S          a case running longer than S seconds is a hang (default 10)
//     -max_len=N          longest mutated input (default: 4096 or twice the largest seed)
//     -artifact_prefix=P  where a crashing or hanging input is written (P + "crash-<hash>")
// A finding (sanitizer report, abort, uncaught exception, hang) writes the input and exits
// non-zero; at the end it prints "DONE cases=N seeds=N mutations=N seconds=S".
#include <sanitizer/common_interface_defs.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

using Input = std::vector<uint8_t>;
using Clock = std::chrono::steady_clock;

// The case being run, for the crash handlers; they may run in a signal handler or while the
// main thread is stuck, so they only read these and call async-signal-safe functions.
std::atomic<const uint8_t*> current_data{nullptr};
std::atomic<size_t> current_size{0};
std::atomic<int64_t> case_started_ms{-1};  // -1 between cases
std::atomic<int64_t> cases_started{0};
char artifact_prefix[4096] = "./";
std::atomic<bool> artifact_written{false};

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch()).count();
}

void WriteAll(int fd, const void* data, size_t size) {
  const auto* bytes = static_cast<const uint8_t*>(data);
  while (size > 0) {
    const ssize_t n = write(fd, bytes, size);
    if (n <= 0) return;
    bytes += n;
    size -= static_cast<size_t>(n);
  }
}

void Say(const char* text) { WriteAll(2, text, std::strlen(text)); }

void SayNumber(int64_t value) {
  char digits[24];
  int at = sizeof digits;
  digits[--at] = '\0';
  do {
    digits[--at] = static_cast<char>('0' + value % 10);
    value /= 10;
  } while (value > 0 && at > 0);
  Say(digits + at);
}

// Writes the current case to <prefix><kind>-<16 hex digits of its FNV-1a hash>, once.
void SaveCurrentInput(const char* kind) {
  if (artifact_written.exchange(true)) return;
  const uint8_t* data = current_data.load();
  const size_t size = current_size.load();
  if (data == nullptr) {
    Say("standalone_driver: the report came between cases (a leak is found at exit), so no "
        "single input caused it; replay the corpus files one by one to find it\n");
    return;
  }
  uint64_t hash = 1469598103934665603ull;
  for (size_t i = 0; i < size; ++i) hash = (hash ^ data[i]) * 1099511628211ull;
  char path[4200];
  size_t at = 0;
  for (const char* p = artifact_prefix; *p && at < 4096; ++p) path[at++] = *p;
  for (const char* p = kind; *p; ++p) path[at++] = *p;
  path[at++] = '-';
  for (int shift = 60; shift >= 0; shift -= 4) path[at++] = "0123456789abcdef"[(hash >> shift) & 15];
  path[at] = '\0';
  const int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) {
    Say("standalone_driver: could not write the input to ");
    Say(path);
    Say("\n");
    return;
  }
  WriteAll(fd, data, size);
  close(fd);
  Say("standalone_driver: ");
  Say(kind);
  Say(" input written to ");
  Say(path);
  Say(" (case ");
  SayNumber(cases_started.load());  // the script reads this as the number of cases run
  Say(")\n");
}

// ASan calls this after its report, before the process exits. GCC links UBSan as a runtime of
// its own, which does not call it: UBSan is made to abort instead (below), and OnFatalSignal
// saves the input.
void OnSanitizerDeath() { SaveCurrentInput("crash"); }

void OnFatalSignal(int signal_number) {
  Say("standalone_driver: abort\n");
  SaveCurrentInput("crash");
  std::signal(signal_number, SIG_DFL);
  std::raise(signal_number);
}

void OnTerminate() {
  Say("standalone_driver: std::terminate (an exception escaped the target)\n");
  SaveCurrentInput("crash");
  std::abort();
}

// A separate thread, so a case stuck in a loop is still caught: after `timeout_s` on one case
// it saves the input and ends the process with libFuzzer's timeout exit code.
void StartWatchdog(int timeout_s) {
  std::thread([timeout_s] {
    while (true) {
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
      const int64_t started = case_started_ms.load();
      if (started >= 0 && NowMs() - started > int64_t{timeout_s} * 1000) {
        Say("standalone_driver: a case ran longer than the -timeout; it hangs\n");
        SaveCurrentInput("timeout");
        _exit(70);
      }
    }
  }).detach();
}

void RunOne(const Input& input) {
  // An empty vector may have no buffer: give the target a valid pointer all the same.
  static const uint8_t empty = 0;
  const uint8_t* data = input.empty() ? &empty : input.data();
  current_data.store(data);
  current_size.store(input.size());
  cases_started.fetch_add(1);
  case_started_ms.store(NowMs());
  LLVMFuzzerTestOneInput(data, input.size());
  case_started_ms.store(-1);
  current_data.store(nullptr);  // `input` may be freed from here on
}

bool ReadFile(const std::filesystem::path& path, Input* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  out->assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return true;
}

// Values that sit on the edges parsers check: zero, sign bits, powers of two and their
// neighbours, all-ones.
const uint64_t kInterestingValues[] = {
    0, 1, 2, 7, 8, 15, 16, 31, 32, 63, 64, 127, 128, 255, 256, 511, 512, 1023, 1024, 4095, 4096,
    32767, 32768, 65535, 65536, 0x7FFFFFFFull, 0x80000000ull, 0xFFFFFFFEull, 0xFFFFFFFFull,
    0x100000000ull, 0x7FFFFFFFFFFFFFFFull, 0x8000000000000000ull, 0xFFFFFFFFFFFFFFFEull,
    0xFFFFFFFFFFFFFFFFull};

class Mutator {
 public:
  Mutator(uint64_t seed, size_t max_len) : rng_(seed), max_len_(max_len) {}

  Input Mutate(const std::vector<Input>& corpus) {
    Input input = corpus[Below(corpus.size())];
    const int steps = 1 + static_cast<int>(Below(4));
    for (int step = 0; step < steps; ++step) MutateOnce(input, corpus);
    if (input.size() > max_len_) input.resize(max_len_);
    return input;
  }

 private:
  uint64_t Below(uint64_t n) { return n == 0 ? 0 : rng_() % n; }

  void MutateOnce(Input& input, const std::vector<Input>& corpus) {
    switch (Below(input.empty() ? 2 : 9)) {
      case 0: {  // insert 1-4 random bytes
        const size_t at = Below(input.size() + 1), count = 1 + Below(4);
        for (size_t i = 0; i < count; ++i) input.insert(input.begin() + static_cast<std::ptrdiff_t>(at), static_cast<uint8_t>(rng_()));
        break;
      }
      case 1: {  // splice: this input's head and another entry's tail
        const Input& other = corpus[Below(corpus.size())];
        const size_t head = Below(input.size() + 1), tail_from = Below(other.size() + 1);
        input.resize(head);
        input.insert(input.end(), other.begin() + static_cast<std::ptrdiff_t>(tail_from), other.end());
        break;
      }
      case 2:  // flip one bit
        input[Below(input.size())] ^= static_cast<uint8_t>(1u << Below(8));
        break;
      case 3:  // replace one byte
        input[Below(input.size())] = static_cast<uint8_t>(rng_());
        break;
      case 4: {  // delete a short run
        const size_t at = Below(input.size()), count = 1 + Below(std::min<size_t>(16, input.size() - at));
        input.erase(input.begin() + static_cast<std::ptrdiff_t>(at), input.begin() + static_cast<std::ptrdiff_t>(at + count));
        break;
      }
      case 5:
      case 6: {  // an interesting integer, 1/2/4/8 bytes, either byte order
        const uint64_t value = kInterestingValues[Below(std::size(kInterestingValues))];
        const size_t width = size_t{1} << Below(4);
        if (input.size() < width) break;
        const size_t at = Below(input.size() - width + 1);
        const bool big_endian = Below(4) == 0;
        for (size_t i = 0; i < width; ++i) {
          input[at + i] = static_cast<uint8_t>(value >> (8 * (big_endian ? width - 1 - i : i)));
        }
        break;
      }
      case 7: {  // add a small delta to one byte (lengths and counts off by a little)
        input[Below(input.size())] += static_cast<uint8_t>(static_cast<int>(Below(33)) - 16);
        break;
      }
      default: {  // copy a chunk of this input or another entry over or into this one
        const Input& from = Below(2) ? input : corpus[Below(corpus.size())];
        if (from.empty()) break;
        const size_t begin = Below(from.size()), count = 1 + Below(std::min<size_t>(64, from.size() - begin));
        const Input chunk(from.begin() + static_cast<std::ptrdiff_t>(begin), from.begin() + static_cast<std::ptrdiff_t>(begin + count));
        const size_t at = Below(input.size() + 1);
        if (Below(2)) {
          input.insert(input.begin() + static_cast<std::ptrdiff_t>(at), chunk.begin(), chunk.end());
        } else {
          for (size_t i = 0; i < chunk.size() && at + i < input.size(); ++i) input[at + i] = chunk[i];
        }
        break;
      }
    }
  }

  std::mt19937_64 rng_;
  size_t max_len_;
};

struct Options {
  int64_t runs = -1;
  double max_total_time = -1;
  uint64_t seed = 1;
  int timeout = 10;
  size_t max_len = 0;
  std::vector<std::string> inputs;
};

[[noreturn]] void Usage(const std::string& problem) {
  std::fprintf(stderr, "standalone_driver: %s\nusage: %s [-runs=N] [-max_total_time=S] [-seed=N] [-timeout=S] "
               "[-max_len=N] [-artifact_prefix=P] CORPUS_DIR_OR_FILE...\n", problem.c_str(), "fuzz_<target>");
  std::exit(2);
}

Options ParseOptions(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.size() < 2 || arg[0] != '-') {
      options.inputs.push_back(arg);
      continue;
    }
    const size_t equals = arg.find('=');
    if (equals == std::string::npos) Usage("flag without a value: " + arg);
    const std::string name = arg.substr(1, equals - 1), value = arg.substr(equals + 1);
    char* end = nullptr;
    const double number = std::strtod(value.c_str(), &end);
    const bool numeric = !value.empty() && *end == '\0' && number >= 0;
    if (name == "artifact_prefix") {
      if (value.size() >= sizeof artifact_prefix) Usage("artifact prefix too long");
      std::strcpy(artifact_prefix, value.c_str());
    } else if (!numeric) {
      Usage("flag " + arg + " is unknown or needs a non-negative number");
    } else if (name == "runs") {
      options.runs = static_cast<int64_t>(number);
    } else if (name == "max_total_time") {
      options.max_total_time = number;
    } else if (name == "seed") {
      options.seed = static_cast<uint64_t>(number);
    } else if (name == "timeout") {
      options.timeout = std::max(1, static_cast<int>(number));
    } else if (name == "max_len") {
      options.max_len = static_cast<size_t>(number);
    } else {
      Usage("unknown flag " + arg);
    }
  }
  return options;
}

}  // namespace

// Defaults for runs without scripts/fuzz-native.sh; UBSAN_OPTIONS from the environment override
// them flag by flag.
extern "C" const char* __ubsan_default_options() { return "abort_on_error=1:print_stacktrace=1:halt_on_error=1"; }

int main(int argc, char** argv) {
  const Options options = ParseOptions(argc, argv);
  __sanitizer_set_death_callback(OnSanitizerDeath);
  std::set_terminate(OnTerminate);
  // Only SIGABRT (a finding, std::terminate): ASan handles the memory-fault signals itself,
  // reports them and calls OnSanitizerDeath.
  std::signal(SIGABRT, OnFatalSignal);
  StartWatchdog(options.timeout);

  // Directories are read in name order, so a seed means the same cases on every machine.
  std::vector<Input> corpus;
  std::vector<std::string> names;
  bool any_directory = false;
  for (const std::string& path : options.inputs) {
    std::vector<std::filesystem::path> files;
    std::error_code error;
    if (std::filesystem::is_directory(path, error)) {
      any_directory = true;
      for (const auto& entry : std::filesystem::directory_iterator(path, error))
        if (entry.is_regular_file()) files.push_back(entry.path());
      std::sort(files.begin(), files.end());
    } else {
      files.push_back(path);
    }
    for (const auto& file : files) {
      Input input;
      if (!ReadFile(file, &input)) Usage("cannot read " + file.string());
      corpus.push_back(std::move(input));
      names.push_back(file.string());
    }
  }

  const auto start = Clock::now();
  const auto seconds = [&] { return std::chrono::duration<double>(Clock::now() - start).count(); };
  for (size_t i = 0; i < corpus.size(); ++i) {
    if (!any_directory) std::fprintf(stderr, "running %s\n", names[i].c_str());
    RunOne(corpus[i]);
  }
  const size_t seeds = corpus.size();
  int64_t mutations = 0;
  const bool mutate = options.runs > 0 || options.max_total_time > 0;
  if (mutate) {
    if (corpus.empty()) corpus.push_back(Input{});  // mutations need something to start from
    size_t largest = 0;
    for (const Input& input : corpus) largest = std::max(largest, input.size());
    const size_t max_len = options.max_len ? options.max_len : std::max<size_t>(4096, 2 * largest);
    Mutator mutator(options.seed, max_len);
    while ((options.runs < 0 || mutations < options.runs) &&
           (options.max_total_time < 0 || (mutations % 64 != 0 || seconds() < options.max_total_time))) {
      RunOne(mutator.Mutate(corpus));
      ++mutations;
    }
  }
  std::printf("DONE cases=%lld seeds=%zu mutations=%lld seconds=%.1f\n",
              static_cast<long long>(seeds + static_cast<size_t>(mutations)), seeds,
              static_cast<long long>(mutations), seconds());
  return 0;
}
