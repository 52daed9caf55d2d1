"""Writers: tables, figures, reports."""
