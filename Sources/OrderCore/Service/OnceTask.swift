import Synchronization

/// Work that runs at most once, started by whoever asks first; everyone who asks waits for that
/// one run (the consumer's drain and close: started by the graceful shutdown, awaited when the
/// records end).
final class OnceTask: Sendable {
    private let work: @Sendable () async -> Void
    private let task = Mutex<Task<Void, Never>?>(nil)

    init(_ work: @escaping @Sendable () async -> Void) { self.work = work }

    /// Starts the work unless it started already.
    @discardableResult
    func start() -> Task<Void, Never> {
        task.withLock { t in
            if let t { return t }
            let made = Task { [work] in await work() }
            t = made
            return made
        }
    }

    /// Starts the work unless it started already, and waits until it is done.
    func run() async { await start().value }
}
