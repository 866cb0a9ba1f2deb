// fl-plot: test accuracy of one or more runs, against the round and against
// the uplink bytes spent so far, drawn by gnuplot (Debian's gnuplot-nox) from
// a script this program writes. Several runs are overlaid, each named, so a
// compression trade-off (fewer bytes, the same accuracy?) is seen at a glance.
//
//   fl-plot runs/quick --out runs/quick/accuracy.png
//   fl-plot runs/s90_q8 runs/s90_q32 --names "8-bit,32-bit" --out sweep.png
//
// A run is a folder with a rounds.csv (fl-server --out, fl-sim --out): its
// columns round, test_accuracy and upload_bytes are used; rounds without an
// evaluation are skipped on the accuracy axis but their bytes count.
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/file_util.h"
#include "common/status.h"
#include "common/text.h"

namespace {

struct Point {
  int round;
  double accuracy_percent;
  double uplink_mb;  // cumulative, through this round
};

struct Run {
  std::string name;
  std::vector<Point> points;
  double total_mb{0};
};

// Reads RUN/rounds.csv by its header's column names.
fl::Result<Run> ReadRun(const std::string& dir, const std::string& name) {
  const std::string path = dir + "/rounds.csv";
  std::ifstream in(path);
  if (!in) return fl::Status::NotFound(path + " (a run folder of fl-server --out or fl-sim --out)");
  std::string line;
  if (!std::getline(in, line)) return fl::Status::InvalidArgument(path + " is empty");
  const std::vector<std::string> header = fl::SplitList(line, ',');
  int round_col = -1, acc_col = -1, up_col = -1;
  for (size_t i = 0; i < header.size(); ++i) {
    if (header[i] == "round") round_col = static_cast<int>(i);
    if (header[i] == "test_accuracy") acc_col = static_cast<int>(i);
    if (header[i] == "upload_bytes") up_col = static_cast<int>(i);
  }
  if (round_col < 0 || acc_col < 0 || up_col < 0) {
    return fl::Status::InvalidArgument(path + ": no round, test_accuracy and upload_bytes columns");
  }
  Run run;
  run.name = name;
  double bytes = 0;
  int row = 1;
  while (std::getline(in, line)) {
    ++row;
    std::vector<std::string> f;
    std::stringstream ss(line);
    std::string cell;
    while (std::getline(ss, cell, ',')) f.push_back(cell);
    // (An empty last field is not read back as one: an absent cell is empty.)
    if (f.size() <= static_cast<size_t>(std::max(round_col, up_col))) {
      return fl::Status::InvalidArgument(path + ", line " + std::to_string(row) + ": " +
                                         std::to_string(f.size()) + " fields");
    }
    bytes += std::strtod(f[up_col].c_str(), nullptr);
    const std::string acc = static_cast<size_t>(acc_col) < f.size() ? f[acc_col] : "";
    if (acc.empty()) continue;  // not evaluated this round
    run.points.push_back(
        {std::atoi(f[round_col].c_str()), 100 * std::atof(acc.c_str()), bytes / 1e6});
  }
  run.total_mb = bytes / 1e6;
  return run;
}

// gnuplot's string quoting: single quotes, a quote doubled.
std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

struct PlotOptions {
  std::vector<std::string> dirs;
  std::string out = "accuracy.png", names_list, title, script_path;
  int width = 1200, height = 480;
  bool linear_bytes = false;
};

// Names, the title and paths go into the gnuplot script inside quotes: a
// control character (a newline) would end the string and start a command.
fl::Status CheckText(const PlotOptions& o) {
  for (const std::string* text : {&o.names_list, &o.title, &o.out, &o.script_path}) {
    for (unsigned char c : *text) {
      if (c < 0x20 || c == 0x7f) {
        return fl::Status::InvalidArgument("'" + *text +
                                           "' holds a control character; it cannot be plotted");
      }
    }
  }
  for (const auto& d : o.dirs) {
    for (unsigned char c : d) {
      if (c < 0x20 || c == 0x7f) {
        return fl::Status::InvalidArgument("the run folder name holds a control character");
      }
    }
  }
  return fl::Status::OK();
}

// The runs with an evaluated round, named by --names or their folders.
fl::Result<std::vector<Run>> ReadRuns(const PlotOptions& o) {
  const std::vector<std::string> names = fl::SplitList(o.names_list, ',');
  std::vector<Run> runs;
  for (size_t i = 0; i < o.dirs.size(); ++i) {
    std::string name = names.empty() ? o.dirs[i] : names[i];
    if (names.empty()) {
      while (name.size() > 1 && name.back() == '/') name.pop_back();
      name = name.substr(name.find_last_of('/') + 1);
    }
    auto run = ReadRun(o.dirs[i], name);
    if (!run.ok()) return run.status();
    if (run->points.empty()) {
      std::fprintf(stderr, "warning: %s has no evaluated round; left out\n", o.dirs[i].c_str());
      continue;
    }
    runs.push_back(std::move(run).value());
  }
  if (runs.empty()) return fl::Status::NotFound("no run with an evaluated round to plot");
  return runs;
}

// Writes each run's points into `dir` and returns the gnuplot script that
// draws both panels from them.
fl::Result<std::string> WriteScript(const PlotOptions& o, const std::vector<Run>& runs,
                                    const std::string& dir) {
  // (noenhanced: a name such as mnist_cnn is text, not a subscript.)
  std::string script = "set terminal pngcairo noenhanced size " + std::to_string(o.width) + "," +
                       std::to_string(o.height) + " font 'sans,10'\nset output " + Quote(o.out) +
                       "\nset datafile separator ','\nset key bottom right\nset grid\n"
                       "set multiplot layout 1,2" +
                       (o.title.empty() ? "" : " title " + Quote(o.title)) + "\n";
  std::string round_plot = "plot ", bytes_plot = "plot ";
  int last_round = 1;
  for (const auto& r : runs) last_round = std::max(last_round, r.points.back().round);
  for (size_t i = 0; i < runs.size(); ++i) {
    const std::string data = dir + "/run" + std::to_string(i) + ".csv";
    std::string rows;
    for (const auto& p : runs[i].points) {
      char buf[96];
      std::snprintf(buf, sizeof buf, "%d,%.4f,%.6f\n", p.round, p.accuracy_percent, p.uplink_mb);
      rows += buf;
    }
    FL_RETURN_IF_ERROR(fl::WriteFileAtomic(data, rows));
    const std::string sep = i == 0 ? "" : ", ";
    round_plot += sep + Quote(data) + " using 1:2 with linespoints title " + Quote(runs[i].name);
    // (The colours are the same in both panels: one key is enough.)
    bytes_plot += sep + Quote(data) + " using 3:2 with linespoints notitle";
  }
  // Whole rounds on the round axis, at most about ten ticks.
  script += "set xtics " + std::to_string((last_round + 9) / 10) +
            "\nset xrange [1:" + std::to_string(std::max(2, last_round)) + "]\n";
  script += "set xlabel 'round'\nset ylabel 'test accuracy (%)'\n" + round_plot + "\n";
  script += "set xtics autofreq\nset xrange [*:*]\n";
  script += std::string(o.linear_bytes ? "" : "set logscale x 10\n") +
            "set xlabel 'uplink (MB, cumulative" + (o.linear_bytes ? "" : ", log scale") +
            ")'\nset ylabel 'test accuracy (%)'\n" + bytes_plot + "\nunset multiplot\n";
  return script;
}

fl::Status RunGnuplot(const std::string& script_file) {
  const pid_t pid = fork();
  if (pid == 0) {
    execlp("gnuplot", "gnuplot", script_file.c_str(), static_cast<char*>(nullptr));
    std::fprintf(stderr,
                 "error: cannot run gnuplot (%s): install it (Debian: apt-get install "
                 "gnuplot-nox; scripts/setup.sh does)\n",
                 std::strerror(errno));
    _exit(127);
  }
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return fl::Status::Internal("gnuplot failed on " + script_file);
  }
  return fl::Status::OK();
}

// The data (one file per run) and the script, in a folder of their own:
// --script's, or a temporary one removed afterwards.
fl::Status Plot(const PlotOptions& o, const std::vector<Run>& runs) {
  std::string dir = o.script_path.empty() ? "" : o.script_path + ".d";
  if (dir.empty()) {
    char tmpl[] = "/tmp/fl-plot.XXXXXX";
    if (!mkdtemp(tmpl)) return fl::Status::IOError("mkdtemp", std::strerror(errno));
    dir = tmpl;
  } else {
    FL_RETURN_IF_ERROR(fl::CreateDirectories(dir));
  }
  auto script = WriteScript(o, runs, dir);
  if (!script.ok()) return script.status();
  const std::string script_file = o.script_path.empty() ? dir + "/plot.gp" : o.script_path;
  FL_RETURN_IF_ERROR(fl::WriteFileAtomic(script_file, *script));
  FL_RETURN_IF_ERROR(RunGnuplot(script_file));
  if (o.script_path.empty()) {
    std::remove(script_file.c_str());
    for (size_t i = 0; i < runs.size(); ++i) {
      std::remove((dir + "/run" + std::to_string(i) + ".csv").c_str());
    }
    rmdir(dir.c_str());
  }
  return fl::Status::OK();
}

}  // namespace

int main(int argc, char** argv) {
  PlotOptions o;
  CLI::App app{
      "fl-plot: test accuracy against the round and against cumulative uplink bytes, one "
      "line per run, drawn with gnuplot"};
  app.add_option("runs", o.dirs, "Run folders, each with a rounds.csv")->required();
  app.add_option("--out", o.out, "PNG to write")->capture_default_str();
  app.add_option("--names", o.names_list,
                 "Comma-separated names of the runs (default: folder names)");
  app.add_option("--title", o.title, "Title over both panels");
  app.add_option("--width", o.width, "Image width in pixels")
      ->capture_default_str()
      ->check(CLI::Range(300, 8000));
  app.add_option("--height", o.height, "Image height in pixels")
      ->capture_default_str()
      ->check(CLI::Range(200, 8000));
  app.add_option("--script", o.script_path, "Also keep the gnuplot script (and its data) here");
  app.add_flag("--linear-bytes", o.linear_bytes,
               "A linear uplink axis (default: logarithmic, so runs 10x apart in bytes both show)");
  CLI11_PARSE(app, argc, argv);
  if (fl::Status st = CheckText(o); !st.ok()) {
    std::fprintf(stderr, "error: %s\n", st.message().c_str());
    return 2;
  }
  const size_t names = fl::SplitList(o.names_list, ',').size();
  if (names > 0 && names != o.dirs.size()) {
    std::fprintf(stderr, "error: --names has %zu name(s) for %zu run(s)\n", names,
                 o.dirs.size());
    return 2;
  }
  auto runs = ReadRuns(o);
  if (!runs.ok()) {
    std::fprintf(stderr, "error: %s\n", runs.status().ToString().c_str());
    return 1;
  }
  if (fl::Status st = Plot(o, *runs); !st.ok()) {
    std::fprintf(stderr, "error: %s\n", st.ToString().c_str());
    return 1;
  }
  for (const auto& r : *runs) {
    const Point& last = r.points.back();
    std::printf("%s: %zu evaluated round(s), last %d at %.2f%%, %.1f MB up in all\n",
                r.name.c_str(), r.points.size(), last.round, last.accuracy_percent, r.total_mb);
  }
  std::printf("wrote %s\n", o.out.c_str());
  return 0;
}
