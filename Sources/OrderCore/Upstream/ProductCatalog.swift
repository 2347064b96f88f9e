/// What the pipeline needs from the Product Service.
public protocol ProductCatalog: Sendable {
    /// Current details of these products; ids the service does not know are in `notFound`.
    func lookup(_ productIds: [Int64]) async throws(UpstreamFailure) -> ProductLookup
}

public struct ProductLookup: Sendable, Equatable {
    public var products: [Int64: Product]
    public var notFound: [Int64]
    public init(products: [Int64: Product], notFound: [Int64]) {
        self.products = products
        self.notFound = notFound
    }
}

/// What the pipeline needs from the Inventory Service.
public protocol InventoryChecker: Sendable {
    func check(_ lines: [(productId: Int64, quantity: Int)]) async throws(UpstreamFailure) -> [StockLine]
}

/// CONTRACT section 5 over Kafka: `get_product_details` → `product_details`.
public struct KafkaProductCatalog: ProductCatalog {
    let client: UpstreamClient
    let topics: Topics

    public init(client: UpstreamClient, topics: Topics) {
        self.client = client
        self.topics = topics
    }

    public func lookup(_ productIds: [Int64]) async throws(UpstreamFailure) -> ProductLookup {
        let reply = try await client.request(service: "product", topic: topics.productRequests, replyTopic: topics.productReplies) { id in
            .object([("request_id", .string(id)), ("product_ids", .array(productIds.map { .int($0) }))])
        }
        return try ProductLookup(reply: reply, asked: productIds)
    }
}

extension ProductLookup {
    /// Reads a `product_details` reply. Entries that break the contract (no name, a price that is
    /// not a non-negative amount with at most two decimals) count as not found rather than being
    /// trusted; ids the reply does not mention count as not found too.
    init(reply: JSON, asked: [Int64]) throws(UpstreamFailure) {
        guard case .array(let list)? = reply["products"] else {
            throw .badReply(service: "product", reason: "products is missing")
        }
        var products: [Int64: Product] = [:]
        for entry in list {
            guard case .int(let id)? = entry["product_id"], case .string(let name)? = entry["name"] else { continue }
            let price: Money?
            switch entry["price"] {
            case .string(let s)?: price = Money(s)
            case .int(let v)?:
                let (cents, overflow) = v.multipliedReportingOverflow(by: 100)
                price = overflow ? nil : Money(cents: cents)
            case .number(let s)?: price = Money(s)
            default: price = nil
            }
            // Prices must fit the database (NUMERIC(14,2)) and leave room for line totals.
            guard let price, price.cents >= 0, price.cents <= Money.maxPrice.cents else { continue }
            products[id] = Product(productId: id, name: name, price: price)
        }
        var seen = Set<Int64>()
        self.init(products: products, notFound: asked.filter { products[$0] == nil && seen.insert($0).inserted })
    }
}

/// CONTRACT section 5 over Kafka: `inventory_check` → `inventory_check_results`.
public struct KafkaInventoryChecker: InventoryChecker {
    let client: UpstreamClient
    let topics: Topics

    public init(client: UpstreamClient, topics: Topics) {
        self.client = client
        self.topics = topics
    }

    public func check(_ lines: [(productId: Int64, quantity: Int)]) async throws(UpstreamFailure) -> [StockLine] {
        let reply = try await client.request(
            service: "inventory", topic: topics.inventoryCheckRequests, replyTopic: topics.inventoryCheckReplies
        ) { id in
            .object([
                ("request_id", .string(id)),
                ("items", .array(lines.map { .object([("product_id", .int($0.productId)), ("quantity", .int(Int64($0.quantity)))]) })),
            ])
        }
        guard case .array(let items)? = reply["items"] else {
            throw .badReply(service: "inventory", reason: "items is missing")
        }
        var available: [Int64: Int] = [:]
        for item in items {
            guard case .int(let id)? = item["product_id"], case .int(let a)? = item["available"] else { continue }
            available[id] = Int(clamping: a)
        }
        // A product the Inventory Service does not mention has nothing available.
        return lines.map { StockLine(productId: $0.productId, requested: $0.quantity, available: available[$0.productId] ?? 0) }
    }
}
