import Kafka
import Logging
import ServiceLifecycle

/// The group consumer as a service: subscribes (the consumer pushes every record to the
/// dispatcher on its poll thread, `Options.deliver`), waits while it runs, and on its graceful
/// shutdown drains the dispatcher (in-flight records finish and are answered, their offsets
/// stored) and closes the consumer (commits the stored offsets, leaves the group, ends `records`).
/// That sequence runs once, whether the shutdown or the end of the consumer comes first.
struct ConsumerLoop: Service {
    /// The group consumer in use now (`TopicRecovery` may replace it).
    let consumerRef: LockedBox<KafkaConsumer?>
    let dispatcher: Dispatcher
    let subscribed: [String]
    let logger: Logger

    func run() async throws {
        guard let consumer = consumerRef.withLock({ $0 }) else { return }
        try consumer.subscribe(subscribed)
        logger.info("consuming", metadata: ["topics": "\(subscribed)"])
        let stop = OnceTask { [dispatcher, consumerRef] in
            await dispatcher.drain()
            await consumerRef.withLock { $0 }?.close()  // commits stored offsets, leaves the group, ends `records`
        }
        await withGracefulShutdownHandler {
            // Waits for the group consumer to end (push delivery: its `records` yield nothing and
            // end when it closes; a record that did come this way would still be offered); when
            // it was replaced (see TopicRecovery), for the fresh one.
            var reading = consumer
            while true {
                for await record in reading.records { dispatcher.offer(record) }
                guard let next = consumerRef.withLock({ $0 }), next !== reading else { break }
                reading = next
            }
        } onGracefulShutdown: { [logger] in
            logger.info("shutting down: draining in-flight records")
            stop.start()
        }
        await stop.run()
    }
}
