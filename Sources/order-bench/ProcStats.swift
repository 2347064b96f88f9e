import Foundation

/// CPU time and context switches of a process, read from /proc: process CPU from
/// `/proc/<pid>/stat` (utime + stime, which keeps the time of threads that have exited), and per
/// thread from `/proc/<pid>/task/<tid>/stat` and `.../status` (voluntary and involuntary context
/// switches exist only per thread, so a thread that exits during a run takes its count with it).
enum ProcStats {
    struct Thread: Sendable {
        var name: String
        var cpuSeconds: Double
        var voluntary: Int
        var involuntary: Int
    }

    struct Sample: Sendable {
        var cpuSeconds: Double
        var threads: [Int32: Thread]
    }

    /// One thread group in a difference of two samples: threads with the same name (digits
    /// dropped, so `rdk:broker1` and `rdk:broker2` count together).
    struct Group: Sendable {
        var name: String
        var threads: Int
        var cpuSeconds: Double
        var voluntary: Int
        var involuntary: Int
        var switches: Int { voluntary + involuntary }
    }

    struct Delta: Sendable {
        var cpuSeconds: Double
        var voluntary: Int
        var involuntary: Int
        var groups: [Group]
        var switches: Int { voluntary + involuntary }
    }

    static func sample(_ pid: Int32) -> Sample {
        var threads: [Int32: Thread] = [:]
        let dir = "/proc/\(pid)/task"
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] {
            guard let tid = Int32(entry), let (name, cpu) = stat("\(dir)/\(entry)/stat") else { continue }
            let switches = contextSwitches("\(dir)/\(entry)/status")
            threads[tid] = Thread(name: name, cpuSeconds: cpu, voluntary: switches.voluntary, involuntary: switches.involuntary)
        }
        return Sample(cpuSeconds: cpuSeconds(pid), threads: threads)
    }

    /// What happened between two samples of one process; threads started in between count from zero.
    static func delta(_ before: Sample, _ after: Sample) -> Delta {
        var groups: [String: Group] = [:]
        for (tid, t) in after.threads {
            let b = before.threads[tid]
            let name = String(t.name.filter { !$0.isNumber })
            var g = groups[name] ?? Group(name: name, threads: 0, cpuSeconds: 0, voluntary: 0, involuntary: 0)
            g.threads += 1
            g.cpuSeconds += t.cpuSeconds - (b?.cpuSeconds ?? 0)
            g.voluntary += t.voluntary - (b?.voluntary ?? 0)
            g.involuntary += t.involuntary - (b?.involuntary ?? 0)
            groups[name] = g
        }
        let list = groups.values.sorted { ($0.cpuSeconds, $0.switches) > ($1.cpuSeconds, $1.switches) }
        return Delta(
            cpuSeconds: after.cpuSeconds - before.cpuSeconds, voluntary: list.reduce(0) { $0 + $1.voluntary },
            involuntary: list.reduce(0) { $0 + $1.involuntary }, groups: list)
    }

    /// utime + stime of a process, in seconds.
    static func cpuSeconds(_ pid: Int32) -> Double { stat("/proc/\(pid)/stat")?.cpuSeconds ?? 0 }

    /// The name (comm) and utime + stime of a process or thread `stat` file.
    private static func stat(_ path: String) -> (name: String, cpuSeconds: Double)? {
        guard let stat = try? String(contentsOfFile: path, encoding: .utf8),
            let open = stat.firstIndex(of: "("), let close = stat.lastIndex(of: ")")
        else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let u = Double(fields[11]), let s = Double(fields[12]) else { return nil }
        return (String(stat[stat.index(after: open)..<close]), (u + s) / Double(sysconf(Int32(_SC_CLK_TCK))))
    }

    private static func contextSwitches(_ path: String) -> (voluntary: Int, involuntary: Int) {
        guard let status = try? String(contentsOfFile: path, encoding: .utf8) else { return (0, 0) }
        var voluntary = 0
        var involuntary = 0
        for line in status.split(separator: "\n") {
            if line.hasPrefix("voluntary_ctxt_switches:") {
                voluntary = Int(line.split(separator: "\t").last ?? "") ?? 0
            } else if line.hasPrefix("nonvoluntary_ctxt_switches:") {
                involuntary = Int(line.split(separator: "\t").last ?? "") ?? 0
            }
        }
        return (voluntary, involuntary)
    }

    /// VmHWM (peak resident set) of a process, in MB.
    static func peakRSSMegabytes(_ pid: Int32) -> Double {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") })
        else { return 0 }
        let kb = line.split(separator: " ").compactMap { Double($0) }.first ?? 0
        return kb / 1024
    }
}
