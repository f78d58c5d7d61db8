//! A bounded streaming tar header parser (filled in by PLAN-9 B1).
