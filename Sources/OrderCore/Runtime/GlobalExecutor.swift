@_spi(ExperimentalCustomExecutors) import _Concurrency
import Synchronization

/// Which executor runs the tasks that have no actor: Dispatch's cooperative pool (Swift's
/// default) or a `ServiceExecutor` of the service's own.
public enum GlobalExecutor {
    /// Makes a new `ServiceExecutor` with `threads` threads the default executor of every task
    /// without an actor; the main actor keeps the platform's main executor. Call it as the first
    /// statement of the async entry point, before any task starts, and at most once: the runtime
    /// creates its executors once.
    ///
    /// Uses the runtime's executor-factory entry point (`_createExecutors`, the SPI behind "Custom
    /// Main and Global Executors"), which Swift 6.3 ships but does not call from `@main` by itself.
    public static func installServiceExecutor(threads: Int) {
        Factory.pending.withLock { $0 = ServiceExecutor(threads: threads) }
        _createExecutors(factory: Factory.self)
    }
}

private struct Factory: ExecutorFactory {
    static let pending = Mutex<ServiceExecutor?>(nil)
    static var mainExecutor: any MainExecutor { PlatformExecutorFactory.mainExecutor }
    static var defaultExecutor: any TaskExecutor {
        pending.withLock { $0 } ?? PlatformExecutorFactory.defaultExecutor
    }
}
