"""Tables and summaries built from pipeline outputs."""
