// checkpoint: filled in after the format lands
