import ServiceLifecycle

/// The heartbeat as a service: it beats until its graceful shutdown, which wakes it at once (no
/// wait for the next beat), and then removes the probes' files.
struct HeartbeatService: Service {
    let heartbeat: Heartbeat
    let liveness: Liveness
    /// Reads the service's state for `Liveness`; hangs when the dispatcher is wedged.
    let sample: @Sendable () async -> Liveness.Sample

    func run() async throws {
        await cancelWhenGracefulShutdown { [heartbeat, liveness, sample] in await heartbeat.run(liveness: liveness, sample: sample) }
    }
}
