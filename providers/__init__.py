"""Dynamic providers and the engine-free logic behind them."""
