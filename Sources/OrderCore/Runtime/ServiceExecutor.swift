@_spi(ExperimentalScheduling) import _Concurrency
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The service's own executor for the tasks that have no actor: a fixed set of threads (one by
/// default) sharing one queue of ready jobs and one heap of timers, behind one condition.
///
/// Why: Dispatch's cooperative pool wakes a second worker for nearly every enqueue and runs each
/// `Task.sleep` through its timer manager thread, which arms, fires and then wakes a worker — about
/// a third of the service's wake-ups at a steady rate (docs/performance.md, "Session 11"). Here an
/// enqueue from a running job only appends to the queue; a sleeping thread is signalled once, and a
/// timer is one timed wait of the thread that will run it.
///
/// Rules this relies on, kept by the code (docs/architecture.md, "Threads and executors"): nothing
/// blocks a job — librdkafka and libpq calls run on their own threads — and jobs are short.
/// Its threads live as long as the process (the global executor does); a thread takes every ready
/// job at once, so a second thread helps only when the first is busy when a burst arrives.
final class ServiceExecutor: TaskExecutor, SchedulingExecutor, @unchecked Sendable {
    private let condition = MonotonicCondition()
    // Under `condition`'s lock:
    private var ready: [UnownedJob] = []
    private var timers = TimerHeap<UnownedJob>()
    private var sleepers = 0
    /// Signals sent to sleepers that have not woken yet; a sleeper is signalled at most once.
    private var wakesOwed = 0
    private var threadIDs: [pthread_t] = []

    init(threads: Int = 1, name: String = "swift-executor") {
        let threadCount = max(1, threads)
        ready.reserveCapacity(256)
        for index in 0..<threadCount {
            // Linux keeps 15 bytes of a thread's name and refuses a longer one.
            let threadName = String((threadCount == 1 ? name : "\(name.prefix(12))-\(index)").utf8.prefix(15)) ?? name
            // Named from inside with pthread's own call: Foundation's `Thread.name` reaches the OS
            // thread only when the new thread runs after `start` has recorded it (a race), and
            // profiles (bench.sh's per-thread CPU) read the OS name.
            let thread = Thread { [self] in
                Self.nameCurrentThread(threadName)
                condition.lock()
                threadIDs.append(pthread_self())
                condition.unlock()
                run()
            }
            thread.stackSize = 8 << 20
            thread.start()
        }
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        condition.lock()
        ready.append(job)
        let wake = takeWake()
        condition.unlock()
        if wake { condition.signal() }
    }

    func enqueue<C: Clock>(
        _ job: consuming ExecutorJob, at instant: C.Instant, tolerance: C.Duration?, clock: C
    ) {
        let job = UnownedJob(job)
        // ContinuousClock and SuspendingClock (the only clocks Task.sleep hands an executor) both
        // count in `Duration`; they differ only while a machine is suspended, which a server is not.
        // Another clock's delay cannot be converted, so its job runs at once: an early wake-up the
        // sleeper's loop tolerates, never a lost one.
        let delay = clock.now.duration(to: instant) as? Duration ?? .zero
        let sum = MonotonicCondition.now().addingReportingOverflow(Self.nanoseconds(delay))
        let deadline = sum.overflow ? UInt64.max : sum.partialValue
        condition.lock()
        let earliest = timers.earliestDeadline
        timers.insert(job, deadline: deadline)
        // Only a deadline earlier than the one a sleeper waits for needs it awake now.
        let wake = (earliest.map { deadline < $0 } ?? true) && takeWake()
        condition.unlock()
        if wake { condition.signal() }
    }

    var asSchedulingExecutor: (any SchedulingExecutor)? { self }

    /// glibc's `pthread_setname_np`, which its Swift module leaves out (it is a GNU extension).
    private static func nameCurrentThread(_ name: String) {
        #if canImport(Glibc)
        typealias SetName = @convention(c) (pthread_t, UnsafePointer<CChar>) -> Int32
        guard let symbol = dlsym(nil, "pthread_setname_np") else { return }
        _ = unsafeBitCast(symbol, to: SetName.self)(pthread_self(), name)
        #endif
    }

    /// Whether the calling thread is one of this executor's.
    var isCurrentThread: Bool {
        let current = pthread_self()
        condition.lock()
        defer { condition.unlock() }
        return threadIDs.contains { pthread_equal($0, current) != 0 }
    }

    /// A signal is due when a thread sleeps that no earlier signal will wake. Lock held.
    private func takeWake() -> Bool {
        guard sleepers > wakesOwed else { return false }
        wakesOwed += 1
        return true
    }

    /// `duration` in whole nanoseconds: zero when negative, `UInt64.max` past about 584 years.
    static func nanoseconds(_ duration: Duration) -> UInt64 {
        guard duration > .zero else { return 0 }
        let (seconds, attoseconds) = duration.components  // both ≥ 0 for a positive duration
        let whole = UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000)
        let total = whole.partialValue.addingReportingOverflow(UInt64(attoseconds / 1_000_000_000))
        return whole.overflow || total.overflow ? .max : total.partialValue
    }

    private func run() {
        var batch: [UnownedJob] = []
        batch.reserveCapacity(256)
        let executor = asUnownedTaskExecutor()
        condition.lock()
        while true {
            if !timers.isEmpty { timers.popDue(now: MonotonicCondition.now(), into: &ready) }
            if !ready.isEmpty {
                swap(&batch, &ready)
                condition.unlock()
                for job in batch { job.runSynchronously(on: executor) }
                batch.removeAll(keepingCapacity: true)
                condition.lock()
                continue
            }
            sleepers += 1
            condition.wait(until: timers.earliestDeadline)
            sleepers -= 1
            if wakesOwed > 0 { wakesOwed -= 1 }
        }
    }
}
