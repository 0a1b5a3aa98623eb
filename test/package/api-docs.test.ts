/**
 * The public API (lib/index.ts, the package's only entry point) documents itself: every export,
 * and every public member of the exported classes, has a doc comment. Read with the TypeScript
 * compiler from the sources, as the published .d.ts carries the same comments.
 */
import { join } from 'node:path';

import ts from 'typescript';

import { packageRoot } from '../../lib/native.js';

function undocumented(): string[] {
  const entry = join(packageRoot, 'lib', 'index.ts');
  const program = ts.createProgram([entry], { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, strict: true, noEmit: true, skipLibCheck: true, types: ['node'] });
  const checker = program.getTypeChecker();
  const moduleSymbol = checker.getSymbolAtLocation(program.getSourceFile(entry)!)!;
  const missing: string[] = [];
  const documented = (symbol: ts.Symbol) => symbol.getDocumentationComment(checker).some((part) => part.text.trim().length > 0);
  for (const exported of checker.getExportsOfModule(moduleSymbol)) {
    const symbol = exported.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(exported) : exported;
    if (!documented(symbol)) missing.push(exported.name);
    if (!(symbol.flags & ts.SymbolFlags.Class)) continue;
    const type = checker.getDeclaredTypeOfSymbol(symbol);
    for (const member of checker.getPropertiesOfType(type)) {
      const declaration = member.valueDeclaration ?? member.declarations?.[0];
      if (!declaration) continue;
      const flags = ts.getCombinedModifierFlags(declaration);
      if (flags & (ts.ModifierFlags.Private | ts.ModifierFlags.Protected) || member.name.startsWith('#')) continue;
      if (ts.getJSDocTags(declaration).some((t) => t.tagName.text === 'internal')) continue;
      // Members inherited from Error (message, stack, …) are documented where Error is.
      if (declaration.getSourceFile().isDeclarationFile) continue;
      if (!documented(member)) missing.push(`${exported.name}.${member.name}`);
    }
  }
  return missing;
}

describe('the public API', () => {
  it('has a doc comment on every export and every public member of its classes', () => {
    expect(undocumented()).toEqual([]);
  });
});
