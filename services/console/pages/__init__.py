"""The console's pages, one module each; each exports `routes`: the page and its live stream."""
