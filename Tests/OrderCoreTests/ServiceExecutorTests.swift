import Foundation
import Testing
@testable import OrderCore

@Suite struct ServiceExecutorTests {
    @Test func timerHeapReleasesEarliestFirstAndTiesInArrivalOrder() {
        var heap = TimerHeap<String>()
        for (name, deadline) in [("c", 30), ("a1", 10), ("d", 40), ("a2", 10), ("b", 20), ("a3", 10)] {
            heap.insert(name, deadline: UInt64(deadline))
        }
        #expect(heap.earliestDeadline == 10)
        var due: [String] = []
        heap.popDue(now: 9, into: &due)
        #expect(due.isEmpty)
        heap.popDue(now: 20, into: &due)
        #expect(due == ["a1", "a2", "a3", "b"])
        #expect(heap.count == 2)
        heap.popDue(now: .max, into: &due)
        #expect(due == ["a1", "a2", "a3", "b", "c", "d"])
        #expect(heap.isEmpty && heap.earliestDeadline == nil)
    }

    @Test func timerHeapKeepsOrderUnderManyInserts() {
        var heap = TimerHeap<Int>()
        var generator = SystemRandomNumberGenerator()
        let deadlines = (0..<500).map { _ in UInt64.random(in: 0..<50, using: &generator) }
        for (index, deadline) in deadlines.enumerated() { heap.insert(index, deadline: deadline) }
        var due: [Int] = []
        heap.popDue(now: .max, into: &due)
        // Sorted by deadline, and within one deadline by arrival (a stable sort of the input).
        let expected = deadlines.enumerated().sorted { ($0.element, $0.offset) < ($1.element, $1.offset) }.map(\.offset)
        #expect(due == expected)
    }

    @Test func durationsBecomeSaturatedNanoseconds() {
        #expect(ServiceExecutor.nanoseconds(.zero) == 0)
        #expect(ServiceExecutor.nanoseconds(.milliseconds(-5)) == 0)
        #expect(ServiceExecutor.nanoseconds(.nanoseconds(1)) == 1)
        #expect(ServiceExecutor.nanoseconds(.milliseconds(1500)) == 1_500_000_000)
        #expect(ServiceExecutor.nanoseconds(.seconds(Int64.max)) == .max)
    }

    @Test func jobsResumedContinuationsAndSleepsRunOnTheExecutorsThread() async {
        let executor = ServiceExecutor(threads: 1, name: "under-test")
        // `Task(executorPreference:)`, not `withTaskExecutorPreference`, whose closure inherits
        // the caller's isolation.
        let onExecutor = await Task(executorPreference: executor) { () async -> [Bool] in
            let first = executor.isCurrentThread
            // Resumed from a thread of its own: the rest of the task must come back to the executor.
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                Thread { continuation.resume() }.start()
            }
            let resumed = executor.isCurrentThread
            try? await Task.sleep(for: .milliseconds(1))
            return [first, resumed, executor.isCurrentThread]
        }.value
        #expect(onExecutor == [true, true, true])
        #expect(!executor.isCurrentThread)
    }

    @Test func threadsCarryTheirNameForProfiles() async {
        let executor = ServiceExecutor(threads: 1, name: "named-exec")
        let name = await Task(executorPreference: executor) { currentThreadName() }.value
        #expect(name == "named-exec")
    }

    @Test func manyConcurrentTasksAllFinishOnEveryThreadCount() async {
        for threads in [1, 3] {
            let executor = ServiceExecutor(threads: threads, name: "executor-\(threads)")
            let sum = await Task(executorPreference: executor) {
                await withTaskGroup(of: Int.self) { group in
                    for value in 1...2000 { group.addTask { await Task.yield(); return value } }
                    return await group.reduce(0, +)
                }
            }.value
            #expect(sum == 2000 * 2001 / 2)
        }
    }

    @Test func sleepsEndNoEarlierThanTheirDeadlineAndInDeadlineOrder() async {
        let executor = ServiceExecutor(threads: 1, name: "executor-sleeps")
        let order = await Task(executorPreference: executor) {
            await withTaskGroup(of: (Int, Duration).self) { group in
                // 150 ms apart: the order holds even if the one thread is pre-empted between starts.
                for delay in [400, 100, 250] {
                    group.addTask {
                        let start = ContinuousClock.now
                        try? await Task.sleep(for: .milliseconds(delay))
                        return (delay, start.duration(to: .now))
                    }
                }
                var finished: [(Int, Duration)] = []
                for await result in group { finished.append(result) }
                return finished
            }
        }.value
        #expect(order.map(\.0) == [100, 250, 400])
        for (delay, elapsed) in order { #expect(elapsed >= .milliseconds(delay)) }
    }
}

/// The OS thread's name, as profilers see it.
private func currentThreadName() -> String? {
    (try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8))?.trimmingCharacters(in: .newlines)
}
