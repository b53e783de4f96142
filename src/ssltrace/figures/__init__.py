"""Publication figures; each module draws one figure family from metric tables only."""
