import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// A small OTLP/HTTP receiver for tests: accepts `POST /v1/traces` and `/v1/metrics` (protobuf)
/// on 127.0.0.1, keeps what it decoded, and answers 200 with an empty export response.
public final class OTLPReceiver: Sendable {
    private struct Store {
        var spans: [ExportedSpan] = []
        var metrics: [ExportedMetric] = []
        var requests = 0
    }
    private let store = Mutex(Store())
    private let channel: Mutex<(any Channel)?>
    public let port: Int

    public var endpoint: String { "http://127.0.0.1:\(port)" }
    public var spans: [ExportedSpan] { store.withLock { $0.spans } }
    public var metrics: [ExportedMetric] { store.withLock { $0.metrics } }
    public var requestCount: Int { store.withLock { $0.requests } }

    public static func start() async throws -> OTLPReceiver {
        let receiver = Box()
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                receiver.children.withLock { $0.append(channel) }
                return channel.pipeline.configureHTTPServerPipeline().flatMap {
                    channel.pipeline.addHandler(Handler(sink: receiver))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let r = OTLPReceiver(channel: channel, port: channel.localAddress?.port ?? 0, box: receiver)
        receiver.receiver.withLock { $0 = r }
        return r
    }

    private let box: Box

    private init(channel: any Channel, port: Int, box: Box) {
        self.box = box
        self.channel = Mutex(channel)
        self.port = port
    }

    /// Stops listening (as a collector that went away): exports then fail to connect.
    public func stop() async {
        let c = channel.withLock { c -> (any Channel)? in
            defer { c = nil }
            return c
        }
        try? await c?.close()
        // Open keep-alive connections too: the exporter must find nobody there.
        for child in box.children.withLock({ $0 }) { try? await child.close() }
    }

    fileprivate func received(path: String, body: [UInt8]) {
        store.withLock { s in
            s.requests += 1
            if path.hasSuffix("/v1/traces") { s.spans += OTLPDecoder.spans(body) }
            if path.hasSuffix("/v1/metrics") { s.metrics += OTLPDecoder.metrics(body) }
        }
    }

    fileprivate final class Box: Sendable {
        let receiver = Mutex<OTLPReceiver?>(nil)
        let children = Mutex<[any Channel]>([])
    }

    private final class Handler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let sink: Box
        var path = ""
        var body: [UInt8] = []
        init(sink: Box) { self.sink = sink }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                path = head.uri
                body = []
            case .body(var buffer):
                body += buffer.readBytes(length: buffer.readableBytes) ?? []
            case .end:
                sink.receiver.withLock { $0 }?.received(path: path, body: body)
                var headers = HTTPHeaders()
                headers.add(name: "content-type", value: "application/x-protobuf")
                headers.add(name: "content-length", value: "0")
                context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            }
        }
    }
}
