import ServiceLifecycle

/// The services of a running order service, in start order. ServiceGroup starts them together and
/// shuts them down one at a time in reverse order, each after the one before has ended:
/// heartbeat (its files go: the probes fail at once) → topic recovery (no consumer is replaced
/// while draining) → consumer (stop reading, drain the dispatcher, close: commit, leave the group)
/// → metrics reporter → outbox relay (sends what the drained records left) → run registry →
/// retention warning → idempotency expiry. `OrderServiceComponents.close` then releases the
/// clients they shared.
struct ServiceLineup: Sendable {
    var expiry: any Service
    var retentionWarning: any Service
    var registry: any Service
    var relay: any Service
    var metrics: (any Service)?
    var consumer: any Service
    var recovery: (any Service)?
    var heartbeat: (any Service)?

    var configurations: [ServiceGroupConfiguration.ServiceConfiguration] {
        // A helper ends only at its own shutdown; if one ends early the others keep running. A
        // service that throws cancels the group (as a failing start-up step ends the process).
        func helper(_ service: any Service) -> ServiceGroupConfiguration.ServiceConfiguration {
            .init(service: service, successTerminationBehavior: .ignore)
        }
        var list = [helper(expiry), helper(retentionWarning), helper(registry), helper(relay)]
        if let metrics { list.append(helper(metrics)) }
        // The records ending without a shutdown (not expected): the others stop in order too.
        list.append(.init(service: consumer, successTerminationBehavior: .gracefullyShutdownGroup))
        if let recovery { list.append(helper(recovery)) }
        if let heartbeat { list.append(helper(heartbeat)) }
        return list
    }
}
