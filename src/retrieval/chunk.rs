//! Splitting Markdown and text into overlapping chunks.
