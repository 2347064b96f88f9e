/// Stage 2: current product details from the Product Service. Unknown ids become
/// `product_not_found` (with `product_ids`); a silent or broken upstream, `upstream_timeout`.
public struct ProductLookupStage: Sendable {
    public let catalog: any ProductCatalog
    public init(catalog: any ProductCatalog) { self.catalog = catalog }

    public func run(_ productIds: [Int64]) async -> Result<[Int64: Product], ServiceError> {
        let lookup: ProductLookup
        do { lookup = try await catalog.lookup(productIds) } catch { return .failure(error.serviceError) }
        guard lookup.notFound.isEmpty else {
            let ids = lookup.notFound.sorted()
            return .failure(ServiceError(
                .productNotFound, "unknown product id(s): \(ids.map(String.init).joined(separator: ", "))",
                details: [("product_ids", .array(ids.map { .int($0) }))]))
        }
        return .success(lookup.products)
    }
}

/// Stage 3: availability from the Inventory Service; lines short of stock become
/// `insufficient_stock` with those lines.
public struct InventoryCheckStage: Sendable {
    public let inventory: any InventoryChecker
    public init(inventory: any InventoryChecker) { self.inventory = inventory }

    public func run(_ lines: [(productId: Int64, quantity: Int)]) async -> Result<Void, ServiceError> {
        let answer: [StockLine]
        do { answer = try await inventory.check(lines) } catch { return .failure(error.serviceError) }
        let short = answer.filter { $0.available < $0.requested }
        guard short.isEmpty else {
            return .failure(ServiceError(
                .insufficientStock, "not enough stock for \(short.count) item(s)",
                details: [("items", .array(short.map(\.json)))]))
        }
        return .success(())
    }
}

extension UpstreamFailure {
    /// Every upstream failure is answered as `upstream_timeout`: nothing was changed, retrying later may work.
    var serviceError: ServiceError {
        switch self {
        case .timeout(let s): ServiceError(.upstreamTimeout, "the \(s) service did not answer in time; nothing was changed")
        case .unavailable(let s, _): ServiceError(.upstreamTimeout, "the \(s) service could not be reached; nothing was changed")
        case .badReply(let s, _): ServiceError(.upstreamTimeout, "the \(s) service gave an unusable answer; nothing was changed")
        }
    }
}
