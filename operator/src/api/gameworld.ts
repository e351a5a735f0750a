/** The GameWorld API as declared by crds/gameworld.yaml. */
export const GAMEWORLD_GROUP = 'aethex.dev';
export const GAMEWORLD_VERSION = 'v1alpha1';
export const GAMEWORLD_KIND = 'GameWorld';
export const GAMEWORLD_PLURAL = 'gameworlds';
export const GAMEWORLD_API_VERSION = `${GAMEWORLD_GROUP}/${GAMEWORLD_VERSION}`;
