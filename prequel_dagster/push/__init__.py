"""Push ingestion: Stitch's Import API requests, validated and staged durably in the provider's lake."""
