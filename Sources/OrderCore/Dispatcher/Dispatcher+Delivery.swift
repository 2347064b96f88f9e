import Kafka
import ServiceContextModule
import Synchronization

extension Dispatcher {
    /// One record's outputs on their way to the broker: sent one at a time, reply first, each
    /// from the delivery report of the one before, and `done` told from the last report, so an
    /// answered record needs no task to resume (reports come on the producer's poll thread: the
    /// steps there stay short and never block). Errors continue in a task, as they are rare: a
    /// retriable one waits out the backoff and resends from the output that failed (an
    /// acknowledged one is never resent); a refused reply is replaced by the handler's
    /// `undeliverable` answer, once; any other refused output is dropped.
    final class Delivery: Sendable {
        private let dispatcher: Dispatcher
        private let record: KafkaRecord
        /// The record span's context, current while sending so each send's span is its child.
        private let context: ServiceContext?
        /// Told once: true when every output was acknowledged or dropped, false when given up
        /// (shutting down while retrying).
        private let done: @Sendable (Bool) -> Void
        private struct Progress {
            var outputs: [KafkaOutgoingRecord]
            /// Outputs acknowledged (or dropped) so far: the next to send.
            var sent = 0
            /// Failed sends of the output at `sent`.
            var failures = 0
            var fellBack = false
            var backoff: Backoff
        }
        /// Steps follow one another (each starts from the previous one's report), so the lock is
        /// never contended; it publishes the progress to the next report's thread.
        private let progress: Mutex<Progress>

        init(
            _ dispatcher: Dispatcher, _ record: KafkaRecord, _ outputs: [KafkaOutgoingRecord], context: ServiceContext?,
            done: @escaping @Sendable (Bool) -> Void
        ) {
            self.dispatcher = dispatcher
            self.record = record
            self.context = context
            self.done = done
            progress = Mutex(Progress(outputs: outputs, backoff: dispatcher.config.backoff))
        }

        func start() { sendNext() }

        private func sendNext() {
            let next = progress.withLock { p in p.sent < p.outputs.count ? p.outputs[p.sent] : nil }
            guard let next else { return done(true) }
            Spans.within(context) {
                dispatcher.effects.deliver(next) { error in
                    guard let error else {
                        self.progress.withLock { p in
                            p.sent += 1
                            p.failures = 0
                        }
                        return self.sendNext()
                    }
                    Task { await self.failed(next, error) }
                }
            }
        }

        private func failed(_ output: KafkaOutgoingRecord, _ error: any Error) async {
            let d = dispatcher
            let failures = progress.withLock { p in
                p.failures += 1
                return p.failures
            }
            if d.handler.isRetriable(error, sending: output, failures: failures) {
                guard d.mayRetry(record) else { return done(false) }
                let delay = progress.withLock { $0.backoff.next() }
                d.logger.warning("retrying in \(delay): \(error)", metadata: record.logMetadata)
                try? await Task.sleep(for: delay)
                return sendNext()
            }
            // The broker refuses this output for good (e.g. too large).
            let replyRefused = progress.withLock { p -> Bool in
                guard p.sent == 0, !p.fellBack else { return false }
                p.fellBack = true
                return true
            }
            if replyRefused {
                // The reply itself: answer with a small reply on the default topic instead.
                let fallback = d.handler.undeliverable(record, error: error)
                progress.withLock { p in
                    p.outputs = fallback
                    p.failures = 0
                }
            } else {
                d.logger.error("dropping an output the broker refuses: \(error)", metadata: record.logMetadata)
                progress.withLock { p in
                    p.sent += 1
                    p.failures = 0
                }
            }
            sendNext()
        }
    }
}
