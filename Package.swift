// swift-tools-version:6.2
import PackageDescription

// Layers, bottom up:
//   CRdKafka, CLibPQ          C system libraries (pkg-config rdkafka, libpq)
//   Kafka, Postgres           thin wrappers: the only modules that import C
//   OrderCore                 the order domain: contract, pipeline stages, dispatcher, store
//                             (spans and instruments through the tracing/metrics APIs only)
//   OrderTelemetry            swift-otel bootstrap from the OTEL_* variables (OTLP/HTTP)
//   ReferenceServices         small Product/Inventory services speaking the contract's section 5
//   order-service, product-service, inventory-service   executables
let package = Package(
    name: "order-service",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "order-service", targets: ["order-service"]),
        .executable(name: "product-service", targets: ["product-service"]),
        .executable(name: "inventory-service", targets: ["inventory-service"]),
        .executable(name: "order-bench", targets: ["order-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-distributed-tracing.git", from: "1.7.3"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-service-context.git", from: "1.5.1"),
        // Only the OTLP/HTTP exporter: the gRPC trait would build grpc-swift for nothing.
        .package(url: "https://github.com/swift-otel/swift-otel.git", from: "1.6.0", traits: ["OTLPHTTP"]),
        // Already a dependency of swift-otel; named here for the test tier's OTLP/HTTP receiver.
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        .systemLibrary(
            name: "CRdKafka", pkgConfig: "rdkafka",
            providers: [.apt(["librdkafka-dev (>= 2.1, see deploy/local/setup.sh)"])]),
        .systemLibrary(name: "CLibPQ", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),
        .target(
            name: "Kafka",
            dependencies: ["CRdKafka", .product(name: "Logging", package: "swift-log")]),
        .target(
            name: "Postgres",
            dependencies: ["CLibPQ", .product(name: "Logging", package: "swift-log")]),
        .target(
            name: "OrderCore",
            dependencies: [
                "Kafka", "Postgres",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceContextModule", package: "swift-service-context"),
            ]),
        // Bootstraps swift-otel from the OTEL_* variables; the only module importing OTel, so that
        // OrderCore sees only the tracing and metrics APIs.
        .target(
            name: "OrderTelemetry",
            dependencies: [
                "OrderCore",
                .product(name: "OTel", package: "swift-otel"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),
        .target(
            name: "ReferenceServices",
            dependencies: [
                "OrderCore", "OrderTelemetry", "Kafka", "Postgres",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),
        .executableTarget(
            name: "order-service",
            dependencies: [
                "OrderCore", "OrderTelemetry",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .executableTarget(
            name: "product-service",
            dependencies: [
                "ReferenceServices",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .executableTarget(
            name: "inventory-service",
            dependencies: [
                "ReferenceServices",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .executableTarget(
            name: "order-bench",
            dependencies: [
                "OrderCore", "Kafka",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        .target(
            name: "TestSupport",
            dependencies: [
                "Kafka", "Postgres", "OrderCore", "ReferenceServices",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "Tests/TestSupport"),
        .testTarget(name: "KafkaTests", dependencies: ["Kafka", "OrderCore", "TestSupport"]),
        // The Kafka wrapper's pure parts (the consumer's state machine and buffers): no broker.
        .testTarget(name: "KafkaUnitTests", dependencies: ["Kafka"]),
        // The Postgres wrapper, and the order domain's SQL (OrderStore, CartBatcher) against the real server.
        .testTarget(name: "PostgresTests", dependencies: ["Postgres", "OrderCore", "TestSupport"]),
        .testTarget(
            name: "OrderCoreTests",
            dependencies: [
                "OrderCore", "OrderTelemetry", "TestSupport",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),
        .testTarget(name: "EndToEndTests", dependencies: ["OrderCore", "Kafka", "TestSupport"]),
        .testTarget(name: "DeployTests", dependencies: ["OrderCore", "OrderTelemetry", .product(name: "Yams", package: "Yams")]),
        // Crashes, outages, hostile input and backlogs; run on their own by deploy/local/test.sh
        // because they stop and start processes under load.
        .testTarget(name: "ReliabilityTests", dependencies: ["OrderCore", "Kafka", "TestSupport"]),
    ]
)
