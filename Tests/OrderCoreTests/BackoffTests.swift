import Testing

@testable import OrderCore

@Suite("Backoff")
struct BackoffTests {
    @Test func doublesUpToTheMaximum() {
        var b = Backoff(initial: .milliseconds(50), maximum: .seconds(5))
        var delays: [Duration] = []
        for _ in 0..<10 { delays.append(b.next()) }
        #expect(delays == [50, 100, 200, 400, 800, 1_600, 3_200, 5_000, 5_000, 5_000].map { Duration.milliseconds($0) })
        #expect(b.current == .seconds(5))
    }

    @Test func aMaximumBelowTheInitialDelayIsTheInitialDelay() {
        var b = Backoff(initial: .milliseconds(200), maximum: .milliseconds(10))
        #expect(b.next() == .milliseconds(200))
        #expect(b.next() == .milliseconds(200))
    }

    @Test func waitSleepsTheCurrentDelayThenDoubles() async {
        var b = Backoff(initial: .milliseconds(1), maximum: .milliseconds(4))
        let start = ContinuousClock.now
        await b.wait()
        await b.wait()
        #expect(ContinuousClock.now - start >= .milliseconds(3))
        #expect(b.current == .milliseconds(4))
    }
}
