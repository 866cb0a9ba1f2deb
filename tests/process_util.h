// Child processes for integration tests: fork/exec with output to a log file,
// killed (SIGKILL) when the Process object dies and when the test process dies
// (PR_SET_PDEATHSIG), so a failing test leaves no orphans.
#ifndef FEDGE_TESTS_PROCESS_UTIL_H_
#define FEDGE_TESTS_PROCESS_UTIL_H_

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace fl {
namespace test {

class Process {
 public:
  Process(const std::string& binary, const std::vector<std::string>& args,
          const std::string& log_path)
      : log_(log_path) {
    // Everything the child needs is built before fork: a test may start
    // processes from several threads, and the child must not allocate.
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(binary.c_str()));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const pid_t parent = getpid();
    pid_ = fork();
    if (pid_ == 0) {
      // (The death signal follows the forking thread: a thread that starts a
      // process waits for it before it ends.)
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);  // parent already gone
      const int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
      }
      execv(binary.c_str(), argv.data());
      _exit(127);
    }
  }
  ~Process() {
    if (running()) {
      kill(pid_, SIGKILL);
      int st;
      waitpid(pid_, &st, 0);
    }
  }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  bool running() const { return pid_ > 0 && !exited_; }
  void Signal(int sig) {
    if (running()) kill(pid_, sig);
  }

  // Waits up to `seconds` for exit; returns the exit code, or -1 on timeout,
  // or 128 + signal if it was killed by a signal.
  int Wait(double seconds) {
    if (exited_) return code_;
    const auto end = std::chrono::steady_clock::now() +
                     std::chrono::milliseconds(static_cast<int>(seconds * 1000));
    while (std::chrono::steady_clock::now() < end) {
      int st = 0;
      const pid_t r = waitpid(pid_, &st, WNOHANG);
      if (r == pid_) {
        exited_ = true;
        code_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        return code_;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return -1;
  }

  std::string Log() const {
    std::ifstream in(log_);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
  }

  // Waits up to `seconds` until the log contains `text`.
  bool WaitForLog(const std::string& text, double seconds) const {
    const auto end = std::chrono::steady_clock::now() +
                     std::chrono::milliseconds(static_cast<int>(seconds * 1000));
    while (std::chrono::steady_clock::now() < end) {
      if (Log().find(text) != std::string::npos) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

 private:
  pid_t pid_{-1};
  bool exited_{false};
  int code_{-1};
  std::string log_;
};

}  // namespace test
}  // namespace fl

#endif  // FEDGE_TESTS_PROCESS_UTIL_H_
