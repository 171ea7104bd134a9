import mkdocs_gen_files
with mkdocs_gen_files.open('gallery.md', 'w') as f:
  f.write('# Gallery\n')
